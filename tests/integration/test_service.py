"""The service on real hypercorn, in front of the real Letta server (scripted model behind it)."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest
from letta_client import AsyncLetta

from app.settings import Settings
from devstack.service_thread import ServiceThread, free_port
from devstack.stack import LocalStack
from pipeline.events import Done, Error, Event, Reasoning, Status, Text, ToolCall, ToolResult
from pipeline.sse import decode_events
from tests.scripted_llm import REASONING, TOOL_NAME, expected_answer

from .service_api import new_agent

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def stream_events(http: httpx.AsyncClient, body: dict[str, Any]) -> list[Event]:
    async with http.stream("POST", "/chat/stream", json=body) as response:
        assert response.status_code == 200
        return list(decode_events([chunk async for chunk in response.aiter_bytes()]))


async def test_health_sees_letta(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    assert response.json()["letta"]["version"] == "0.16.8"


async def test_concurrent_creation_makes_one_agent_in_letta(http: httpx.AsyncClient, letta_stack: LocalStack) -> None:
    results: list[httpx.Response] = []

    async def create() -> None:
        results.append(await http.post("/agents", json={"user_id": "race-student"}))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(create)
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    assert len({r.json()["agent_id"] for r in results}) == 1
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        found = [a async for a in letta.agents.list(tags=["user:race-student"], match_all_tags=True)]
    assert len(found) == 1
    listed = (await http.get("/agents", params={"user_id": "race-student"})).json()["agents"]
    assert [a["agent_id"] for a in listed] == [found[0].id]


async def test_chat_returns_the_scripted_reply(http: httpx.AsyncClient) -> None:
    agent_id = await new_agent(http, "chat-student", user_name="Test Student")
    response = await http.post("/chat", json={"agent_id": agent_id, "message": "Hello tutor"})
    assert response.status_code == 200, response.text
    assert response.json()["response"] == expected_answer("Hello tutor")


async def test_stream_thinks_uses_a_tool_and_answers_in_order(http: httpx.AsyncClient) -> None:
    agent_id = await new_agent(http, "stream-student", user_name="Test Student")
    prompt = "[think] [tool] Can you find what we discussed?"
    events = await stream_events(http, {"agent_id": agent_id, "message": prompt})
    kinds = [type(e).__name__ for e in events]
    thinking = events.index(Status("Thinking..."))
    using = events.index(Status(f"Using {TOOL_NAME}..."))
    first_text = next(i for i, e in enumerate(events) if isinstance(e, Text))
    assert thinking < using < first_text, kinds
    assert "".join(e.content for e in events if isinstance(e, Reasoning)) == REASONING
    assert any(isinstance(e, ToolCall) and e.name == TOOL_NAME for e in events)
    assert any(isinstance(e, ToolResult) and e.name == TOOL_NAME for e in events)
    assert "".join(e.content for e in events if isinstance(e, Text)) == expected_answer(prompt)
    assert isinstance(events[-1], Done)
    assert events[-1].stop_reason == "end_turn"


async def test_message_level_mode_still_works(http: httpx.AsyncClient) -> None:
    agent_id = await new_agent(http, "message-level-student", user_name="Test Student")
    body = {"agent_id": agent_id, "message": "plain", "stream_tokens": False, "enable_thinking": False}
    events = await stream_events(http, body)
    assert "".join(e.content for e in events if isinstance(e, Text)) == expected_answer("plain")
    assert isinstance(events[-1], Done)


async def test_model_failure_becomes_an_error_event(http: httpx.AsyncClient) -> None:
    agent_id = await new_agent(http, "fail-student", user_name="Test Student")
    events = await stream_events(http, {"agent_id": agent_id, "message": "[fail] please"})
    assert isinstance(events[-1], Error), events
    assert not any(isinstance(e, Done) for e in events)


async def test_unknown_agent_is_404_before_the_stream(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/chat/stream", json={"agent_id": "agent-00000000-0000-4000-8000-000000000000", "message": "hi"}
    )
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_letta_unreachable_is_503_quickly() -> None:
    settings = Settings(letta_base_url=f"http://127.0.0.1:{free_port()}")
    with ServiceThread(settings) as dead:
        async with httpx.AsyncClient(base_url=dead.url, timeout=10) as client:
            began = time.monotonic()
            response = await client.post("/chat/stream", json={"agent_id": "agent-1", "message": "hi"})
            took = time.monotonic() - began
            assert response.status_code == 503
            print(f"503 after {took * 1000:.0f} ms with Letta down")
            assert took < 5  # a hang guard; the figure is reported
            assert json.loads(response.text)["error"] == "upstream_unavailable"
