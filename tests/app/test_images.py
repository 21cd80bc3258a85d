"""Pictures in a chat request: forwarded to Letta as image parts, or refused with a 400 naming the field.

Nothing reaches Letta when a picture is refused (the fake Letta records every message it got).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart

from app.factory import create_app
from app.settings import Settings

from .fake_letta import make_fake

pytestmark = pytest.mark.anyio

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005ff02fea36b8a6c0000000049454e44ae426082"
)
PNG_B64 = base64.b64encode(PNG).decode()
GIF_B64 = base64.b64encode(b"GIF89a" + b"\x00" * 20).decode()
MAX_BYTES = 200


@pytest.fixture
def letta() -> Any:
    return make_fake()


@pytest.fixture
async def app(letta: Any) -> AsyncIterator[Quart]:
    settings = Settings(max_images=2, max_image_bytes=MAX_BYTES, max_body_bytes=20_000)
    quart = create_app(settings, client=letta)
    async with quart.test_app():
        yield quart


async def agent_of(app: Quart, user_id: str = "pic-student") -> str:
    response = await app.test_client().post("/agents", json={"user_id": user_id})
    agent_id: str = (await response.get_json())["agent_id"]
    return agent_id


def png(data: str = PNG_B64, media_type: str = "image/png") -> dict[str, str]:
    return {"media_type": media_type, "data": data}


@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_pictures_reach_letta_as_image_parts_after_the_text(app: Quart, letta: Any, path: str) -> None:
    agent_id = await agent_of(app)
    body = {"agent_id": agent_id, "message": "What is this?", "images": [png(), png(GIF_B64, "IMAGE/GIF")]}
    response = await app.test_client().post(path, json=body)
    assert response.status_code == 200
    await response.get_data()
    assert letta.agents.messages.sent == [
        (
            agent_id,
            [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": GIF_B64}},
            ],
        )
    ]


async def test_a_picture_alone_is_a_message_and_text_alone_stays_a_string(app: Quart, letta: Any) -> None:
    agent_id = await agent_of(app)
    client = app.test_client()
    response = await client.post("/chat", json={"agent_id": agent_id, "message": "", "images": [png()]})
    assert response.status_code == 200
    response = await client.post("/chat", json={"agent_id": agent_id, "message": "hi", "images": []})
    assert response.status_code == 200
    picture = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    assert letta.agents.messages.sent == [(agent_id, [picture]), (agent_id, "hi")]


@pytest.mark.parametrize(
    ("images", "field", "words"),
    [
        ([png(), png(), png()], "images", "at most 2"),
        ([png(media_type="image/svg+xml")], "images[0].media_type", "must be one of"),
        ([png(), png("not base64!!")], "images[1].data", "not valid base64"),
        ([png(base64.b64encode(PNG + b"\x00" * MAX_BYTES).decode())], "images[0].data", f"larger than {MAX_BYTES}"),
        ([png(GIF_B64)], "images[0].data", "not a image/png"),
        ([png("data:image/png;base64," + PNG_B64)], "images[0].data", "without a data: prefix"),
        ([png("")], "images[0].data", "empty"),
        ([{"media_type": "image/png"}], "images[0].data", "required"),
        ([png(), {"media_type": "image/png", "data": 7}], "images[1].data", "expected str"),
        ([png(), "x"], "images[1]", "object"),
        ("not a list", "images", "list"),
    ],
)
@pytest.mark.parametrize("path", ["/chat", "/chat/stream"])
async def test_bad_pictures_are_a_400_naming_the_field_and_nothing_is_sent(
    app: Quart, letta: Any, path: str, images: Any, field: str, words: str
) -> None:
    agent_id = await agent_of(app)
    response = await app.test_client().post(path, json={"agent_id": agent_id, "message": "look", "images": images})
    assert response.status_code == 400
    payload = await response.get_json()
    assert payload["error"] == "invalid_request"
    assert payload["field"] == field
    assert words in payload["message"]
    assert letta.agents.messages.sent == []


async def test_a_body_over_the_limit_is_a_413_and_nothing_is_sent(app: Quart, letta: Any) -> None:
    agent_id = await agent_of(app)
    huge = png(base64.b64encode(PNG + b"\x00" * 16_000).decode())
    response = await app.test_client().post(
        "/chat/stream", json={"agent_id": agent_id, "message": "x", "images": [huge]}
    )
    assert response.status_code == 413
    assert letta.agents.messages.sent == []


def test_default_body_limit_holds_the_default_pictures() -> None:
    settings = Settings()
    as_base64 = settings.max_images * -(-settings.max_image_bytes // 3) * 4
    assert settings.max_body_bytes >= as_base64 + 4 * settings.max_message_chars


def completion_body(content: Any) -> dict[str, Any]:
    return {"model": "tutor", "stream": True, "messages": [{"role": "user", "content": content}]}


async def test_openai_image_url_parts_reach_letta(app: Quart, letta: Any) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]
    response = await app.test_client().post(
        "/v1/chat/completions", json=completion_body(content), headers={"X-OpenWebUI-User-Id": "pic-openai"}
    )
    assert response.status_code == 200
    await response.get_data()
    [(_, sent)] = letta.agents.messages.sent
    assert sent == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
    ]


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("https://example.com/cat.png", "messages[0].content[1].image_url.url"),
        (f"data:image/bmp;base64,{PNG_B64}", "messages[0].content[1].image_url.url"),
        ("data:image/png;base64,@@@@", "messages[0].content[1].image_url.url"),
    ],
)
async def test_openai_bad_image_urls_are_a_400_naming_the_part(app: Quart, letta: Any, url: str, param: str) -> None:
    content = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
    response = await app.test_client().post(
        "/v1/chat/completions", json=completion_body(content), headers={"X-OpenWebUI-User-Id": "pic-openai"}
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"]["param"] == param
    assert letta.agents.messages.sent == []
