"""The HTTP contract: status codes, JSON bodies, and the SSE stream, with an in-memory Letta."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest
from quart import Quart

from pipeline.events import Done, Reasoning, Status, Text
from pipeline.sse import decode_events

pytestmark = pytest.mark.anyio


async def create(app: Quart, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await app.test_client().post("/agents", json=body)
    return response.status_code, await response.get_json()


async def test_health_reports_letta(app: Quart, letta: Any) -> None:
    response = await app.test_client().get("/health")
    assert response.status_code == 200
    assert (await response.get_json())["letta"]["ok"] is True
    letta.store.down = True
    response = await app.test_client().get("/health")
    assert response.status_code == 503
    assert (await response.get_json())["letta"]["ok"] is False


async def test_create_agent_once_then_find_it(app: Quart, letta: Any) -> None:
    status, first = await create(app, user_id="u1", user_name="Ada")
    assert status == 201
    assert first["created"] is True
    assert first["agent_type"] == "tutor"
    status, again = await create(app, user_id="u1")
    assert status == 200
    assert again["agent_id"] == first["agent_id"]
    assert letta.agents.created == 1


async def test_concurrent_creation_makes_one_agent(app: Quart, letta: Any) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(functools.partial(create, app, user_id="same"))
    assert letta.agents.created == 1


async def test_list_and_get_agents(app: Quart) -> None:
    _, agent = await create(app, user_id="u2")
    response = await app.test_client().get("/agents", query_string={"user_id": "u2"})
    assert [a["agent_id"] for a in (await response.get_json())["agents"]] == [agent["agent_id"]]
    response = await app.test_client().get(f"/agents/{agent['agent_id']}")
    assert (await response.get_json())["user_id"] == "u2"
    response = await app.test_client().get("/agents/agent-missing")
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "not_found"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/agents", {}, "user_id"),
        ("/agents", {"user_id": ""}, "user_id"),
        ("/agents", {"user_id": 7}, "user_id"),
        ("/agents", {"user_id": "u", "agent_type": "pirate"}, "agent_type"),
        ("/chat", {"message": "hi"}, "agent_id"),
        ("/chat", {"agent_id": "a"}, "message"),
        ("/chat", {"agent_id": "a", "message": "   "}, "message"),
        ("/chat/stream", {"agent_id": "a", "message": "x" * 1001}, "message"),
        ("/chat/stream", {"agent_id": "a", "message": "hi", "enable_thinking": "no"}, "enable_thinking"),
        ("/chat/stream", ["not", "an", "object"], None),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(path: str, body: Any, field: str | None) -> None:
    app_ = create_app_for_validation()
    async with app_.test_app():
        response = await app_.test_client().post(path, json=body)
    assert response.status_code == 400
    payload = await response.get_json()
    assert payload["error"] == "invalid_request"
    assert payload["field"] == field


def create_app_for_validation() -> Quart:
    from app.factory import create_app
    from app.settings import Settings

    from .fake_letta import make_fake

    return create_app(Settings(max_message_chars=1000), client=make_fake())


async def test_non_json_and_oversized_bodies(app: Quart) -> None:
    client = app.test_client()
    response = await client.post("/chat", data=b"\xff\xfe not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    response = await client.post("/chat", data=b"x" * 20_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert (await response.get_json())["error"] == "request_entity_too_large"


async def test_unknown_routes_and_methods_answer_json(app: Quart) -> None:
    response = await app.test_client().get("/nope")
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "not_found"
    response = await app.test_client().get("/chat")
    assert response.status_code == 405


async def test_chat_returns_the_whole_reply(app: Quart) -> None:
    _, agent = await create(app, user_id="u3")
    response = await app.test_client().post("/chat", json={"agent_id": agent["agent_id"], "message": "hi"})
    assert response.status_code == 200
    reply = await response.get_json()
    assert reply["response"] == "Hello student"
    assert reply["reasoning"] == "hmm"
    assert reply["stop_reason"] == "end_turn"


async def test_chat_to_unknown_agent_is_404(app: Quart) -> None:
    response = await app.test_client().post("/chat", json={"agent_id": "agent-x", "message": "hi"})
    assert response.status_code == 404


async def test_letta_down_is_503_before_any_stream(app: Quart, letta: Any) -> None:
    _, agent = await create(app, user_id="u4")
    letta.store.down = True
    for path in ("/chat", "/chat/stream"):
        response = await app.test_client().post(path, json={"agent_id": agent["agent_id"], "message": "hi"})
        assert response.status_code == 503, path
        assert (await response.get_json())["error"] == "upstream_unavailable"
    assert (await create(app, user_id="u5"))[0] == 503


async def test_stream_is_sse_and_decodes_to_the_turn(app: Quart, letta: Any) -> None:
    _, agent = await create(app, user_id="u6")
    response = await app.test_client().post("/chat/stream", json={"agent_id": agent["agent_id"], "message": "hi"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = list(decode_events([await response.get_data()]))
    assert events[:2] == [Status("Thinking..."), Reasoning("Let me think.")]
    assert "".join(e.content for e in events if isinstance(e, Text)) == "Hello student"
    assert isinstance(events[-1], Done)
    assert letta.agents.messages.streams[-1].closed
    assert letta.agents.messages.cancelled == []


async def test_stream_without_thinking_has_no_reasoning(app: Quart) -> None:
    _, agent = await create(app, user_id="u7")
    body = {"agent_id": agent["agent_id"], "message": "hi", "enable_thinking": False}
    response = await app.test_client().post("/chat/stream", json=body)
    events = list(decode_events([await response.get_data()]))
    assert not [e for e in events if isinstance(e, (Status, Reasoning))]
    assert isinstance(events[-1], Done)


async def test_ownership_hides_other_students_agents(app: Quart) -> None:
    _, mine = await create(app, user_id="owner")
    client = app.test_client()
    for path in ("/chat", "/chat/stream"):
        response = await client.post(path, json={"agent_id": mine["agent_id"], "message": "hi", "user_id": "intruder"})
        assert response.status_code == 404, path
        assert (await response.get_json())["message"] == "agent not found"
    response = await client.get(f"/agents/{mine['agent_id']}", query_string={"user_id": "intruder"})
    assert response.status_code == 404
    response = await client.post("/chat", json={"agent_id": mine["agent_id"], "message": "hi", "user_id": "owner"})
    assert response.status_code == 200


@pytest.mark.parametrize("keep_metadata", [True, False])
async def test_a_restarted_service_finds_existing_agents_in_letta(letta: Any, keep_metadata: bool) -> None:
    from app.factory import create_app
    from app.settings import Settings

    first = create_app(Settings(), client=letta)
    async with first.test_app():
        created = await (await first.test_client().post("/agents", json={"user_id": "back"})).get_json()
    if not keep_metadata:  # agents made before metadata was written: only the tags say whose they are
        for agent_id, agent in letta.store.agents.items():
            letta.store.agents[agent_id] = agent.model_copy(update={"metadata": None})
    second = create_app(Settings(), client=letta)
    async with second.test_app():
        client = second.test_client()
        response = await client.get(f"/agents/{created['agent_id']}")
        assert response.status_code == 200
        listed = await (await client.get("/agents", query_string={"user_id": "back"})).get_json()
        assert [a["agent_id"] for a in listed["agents"]] == [created["agent_id"]]
        again = await client.post("/agents", json={"user_id": "back"})
        assert again.status_code == 200
    assert letta.agents.created == 1
