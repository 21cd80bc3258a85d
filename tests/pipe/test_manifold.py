"""The pipe as a manifold: ``pipes()`` lists the service's agent types (cached, with a fallback when the service
can't answer), and the model id OpenWebUI passes (``<function id>.<type id>``) picks the student's agent type."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.service_thread import ServiceThread, free_port
from pipe import letta_pipe
from pipe.letta_pipe import Pipe

from .harness import make_pipe, run_pipe

pytestmark = pytest.mark.anyio


@pytest.fixture
def service_config(scripted: ServiceThread) -> Iterator[dict[str, Any]]:
    config: dict[str, Any] = scripted.app.config
    yield config
    config["agent_types_status"] = 200
    config["agent_types"] = [
        {"id": "tutor", "name": "Letta Tutor", "description": "essays"},
        {"id": "study-coach", "name": "Study Coach", "description": "study plans"},
    ]


def listings(calls: list[Any]) -> int:
    return sum(1 for name, _ in calls if name == "agent-types")


def test_pipes_is_a_coroutine_function_as_openwebui_awaits_it() -> None:
    # OpenWebUI 0.12.4 awaits pipes() only when asyncio.iscoroutinefunction says so (else calls it synchronously)
    assert asyncio.iscoroutinefunction(Pipe().pipes)


async def test_pipes_lists_one_model_per_agent_type_with_its_name(scripted: ServiceThread, calls: list[Any]) -> None:
    pipe = make_pipe(scripted.url, SERVICE_TOKEN="tok")
    assert await pipe.pipes() == [{"id": "tutor", "name": "Letta Tutor"}, {"id": "study-coach", "name": "Study Coach"}]
    assert scripted.app.config["auth"][-1] == "Bearer tok"
    assert listings(calls) == 1


async def test_the_list_is_cached_then_fetched_again(
    scripted: ServiceThread, calls: list[Any], service_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = make_pipe(scripted.url)
    first = await pipe.pipes()
    service_config["agent_types"] = [{"id": "coach", "name": "Coach", "description": ""}]
    assert await pipe.pipes() == first  # within TYPES_TTL: no request
    assert listings(calls) == 1
    monkeypatch.setattr(letta_pipe, "TYPES_TTL", 0.0)
    monkeypatch.setattr(letta_pipe, "TYPES_RETRY", 0.0)
    pipe = make_pipe(scripted.url)
    assert await pipe.pipes() == [{"id": "coach", "name": "Coach"}]
    service_config["agent_types"] = [{"id": "tutor", "name": "Tutor"}, {"id": "coach", "name": "Coach"}]
    assert await pipe.pipes() == [{"id": "tutor", "name": "Tutor"}, {"id": "coach", "name": "Coach"}]


async def test_a_failing_service_keeps_the_last_list(
    scripted: ServiceThread, calls: list[Any], service_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(letta_pipe, "TYPES_TTL", 0.0)
    monkeypatch.setattr(letta_pipe, "TYPES_RETRY", 0.0)
    pipe = make_pipe(scripted.url)
    good = await pipe.pipes()
    service_config["agent_types_status"] = 503
    assert await pipe.pipes() == good
    assert listings(calls) == 2  # it did ask


async def test_after_a_failure_the_service_is_not_asked_again_at_once(
    scripted: ServiceThread, calls: list[Any], service_config: dict[str, Any]
) -> None:
    service_config["agent_types_status"] = 401
    pipe = make_pipe(scripted.url, AGENT_TYPE="tutor")
    assert await pipe.pipes() == [{"id": "tutor", "name": "Letta Tutor"}]  # the valve's type, nothing cached
    assert await pipe.pipes() == [{"id": "tutor", "name": "Letta Tutor"}]
    assert listings(calls) == 1  # within TYPES_RETRY: model listings stay fast


async def test_an_unreachable_service_lists_the_fallback_type() -> None:
    pipe = make_pipe(f"http://127.0.0.1:{free_port()}", AGENT_TYPE="study-coach")
    assert await pipe.pipes() == [{"id": "study-coach", "name": "Letta Study Coach"}]


async def test_a_malformed_listing_is_a_failure_not_a_crash(
    scripted: ServiceThread, calls: list[Any], service_config: dict[str, Any]
) -> None:
    service_config["agent_types"] = [{"name": "no id"}]
    assert await make_pipe(scripted.url).pipes() == [{"id": "tutor", "name": "Letta Tutor"}]
    service_config["agent_types"] = []
    assert await make_pipe(scripted.url, AGENT_TYPE="x").pipes() == [{"id": "x", "name": "Letta X"}]


async def test_the_model_id_picks_the_agent_type(scripted: ServiceThread, calls: list[Any]) -> None:
    pipe = make_pipe(scripted.url)
    outcome = await run_pipe(pipe, "happy", model="letta_agents.study-coach")
    assert outcome.content == "Hello, student"
    await run_pipe(pipe, "happy", model="letta_agents.tutor", user_id="student-2")
    agents = [body for name, body in calls if name == "agents"]
    assert [(a["user_id"], a["agent_type"]) for a in agents] == [("student-1", "study-coach"), ("student-2", "tutor")]


async def test_a_model_id_without_a_type_uses_the_agent_type_valve(scripted: ServiceThread, calls: list[Any]) -> None:
    await run_pipe(make_pipe(scripted.url, AGENT_TYPE="study-coach"), "happy", model="letta_agents")
    await run_pipe(make_pipe(scripted.url, AGENT_TYPE="study-coach"), "happy", model="letta_agents.")
    assert [body["agent_type"] for name, body in calls if name == "agents"] == ["study-coach", "study-coach"]
