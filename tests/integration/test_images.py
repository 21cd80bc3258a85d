"""Pictures through the service to the real Letta 0.16.8 and on to the (scripted) model; usage back in ``done``.

What the model received is read from the scripted LLM's request log: Letta turns our image parts
(base64 sources) into OpenAI ``image_url`` parts with ``data:`` URLs.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from devstack.stack import LocalStack
from pipeline.events import Done
from pipeline.sse import decode_events
from tests.scripted_llm import expected_answer, received_images

from .service_api import new_agent

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005ff02fea36b8a6c0000000049454e44ae426082"
)
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def request_log(stack: LocalStack) -> Any:
    return stack.logs_dir / "llm-requests.jsonl"


async def test_pictures_reach_the_model_with_the_same_bytes_and_done_carries_usage(
    http: httpx.AsyncClient, letta_stack: LocalStack
) -> None:
    agent_id = await new_agent(http, "picture-student")
    marker = f"picture-{uuid.uuid4().hex[:8]}"
    prompt = f"[long 7] What do these show? {marker}"
    images = [{"media_type": "image/png", "data": b64(PNG)}, {"media_type": "image/gif", "data": b64(GIF)}]
    async with http.stream(
        "POST", "/chat/stream", json={"agent_id": agent_id, "message": prompt, "images": images}
    ) as r:
        assert r.status_code == 200
        events = list(decode_events([chunk async for chunk in r.aiter_bytes()]))
    assert "".join(getattr(e, "content", "") for e in events if type(e).__name__ == "Text") == expected_answer(prompt)
    # the model got the text and both pictures, byte for byte, in order
    got = received_images(request_log(letta_stack), marker)
    assert got, "no model request carried the message"
    assert got[0] == [f"data:image/png;base64,{b64(PNG)}", f"data:image/gif;base64,{b64(GIF)}"]
    # the usage Letta reported (the scripted model counts 100 prompt tokens and one per answer word)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (100, 7, 107)
    assert done.usage.step_count == 1


async def test_a_picture_alone_reaches_the_model_through_chat(http: httpx.AsyncClient, letta_stack: LocalStack) -> None:
    agent_id = await new_agent(http, "picture-student-2")
    before = len(received_images(request_log(letta_stack), ""))
    response = await http.post(
        "/chat", json={"agent_id": agent_id, "message": "", "images": [{"media_type": "image/png", "data": b64(PNG)}]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["response"] == expected_answer("")
    after = received_images(request_log(letta_stack), "")
    assert [f"data:image/png;base64,{b64(PNG)}"] in after[before:]


@pytest.mark.parametrize(
    ("images", "field"),
    [
        ([{"media_type": "image/png", "data": b64(PNG)}] * 5, "images"),
        ([{"media_type": "image/png", "data": b64(PNG + b"\x00" * (5 * 1024 * 1024))}], "images[0].data"),
        ([{"media_type": "image/png", "data": b64(PNG)}, {"media_type": "image/png", "data": "%%%"}], "images[1].data"),
        ([{"media_type": "application/pdf", "data": b64(PNG)}], "images[0].media_type"),
    ],
)
async def test_too_many_or_too_large_pictures_are_a_400_and_reach_nobody(
    http: httpx.AsyncClient, letta_stack: LocalStack, images: list[dict[str, str]], field: str
) -> None:
    agent_id = await new_agent(http, "picture-student-3")
    marker = f"refused-{uuid.uuid4().hex[:8]}"
    response = await http.post("/chat/stream", json={"agent_id": agent_id, "message": marker, "images": images})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert received_images(request_log(letta_stack), marker) == []
    # the agent is free: the refused message claimed no turn
    async with http.stream("POST", "/chat/stream", json={"agent_id": agent_id, "message": "hi"}) as r:
        assert r.status_code == 200
        await r.aread()
