"""A stream's life around the pipeline: one turn per agent, metrics, request ids, and clean-up in every ending."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from quart import Quart

from app.metrics import StreamMetrics
from app.services import EXTENSION, Services
from app.sse_body import PipelineBody
from app.stream_session import StreamSession
from app.turns import TurnGuard
from pipeline.compose import open_pipeline
from pipeline.encode import encode_sse
from pipeline.events import Error, Text
from pipeline.source import read_source
from tests.pipeline.fakes import FakeStream, FakeTurn, endless

pytestmark = pytest.mark.anyio


def svc(app: Quart) -> Services:
    found: Services = app.extensions[EXTENSION]
    return found


async def new_agent(app: Quart, user: str) -> str:
    response = await app.test_client().post("/agents", json={"user_id": user})
    agent_id: str = (await response.get_json())["agent_id"]
    return agent_id


async def test_second_message_while_a_turn_runs_is_409(app: Quart) -> None:
    agent_id = await new_agent(app, "busy")
    svc(app).guard.claim(agent_id)  # a turn in progress
    for path in ("/chat", "/chat/stream"):
        response = await app.test_client().post(path, json={"agent_id": agent_id, "message": "again"})
        assert response.status_code == 409, path
        assert (await response.get_json())["error"] == "turn_in_progress"
    assert svc(app).metrics.refused_busy == 2


async def test_agent_is_free_again_after_each_kind_of_turn(app: Quart) -> None:
    agent_id = await new_agent(app, "free")
    client = app.test_client()
    for path in ("/chat", "/chat/stream", "/chat"):
        response = await client.post(path, json={"agent_id": agent_id, "message": "hi"})
        await response.get_data()
        assert response.status_code == 200
        assert not svc(app).guard.busy(agent_id)


async def test_metrics_count_streams_and_time_to_first_event(app: Quart) -> None:
    agent_id = await new_agent(app, "metrics")
    response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "hi"})
    await response.get_data()
    text = await (await app.test_client().get("/metrics")).get_data(as_text=True)
    assert "letta_stream_active_streams 0.0" in text
    assert "letta_stream_streams_started_total 1.0" in text
    assert 'letta_stream_streams_ended_total{outcome="finished"} 1.0' in text
    assert "letta_stream_time_to_first_event_seconds_count 1.0" in text


async def test_request_id_is_echoed_or_made_up(app: Quart) -> None:
    response = await app.test_client().get("/health", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    response = await app.test_client().get("/health", headers={"X-Request-Id": "bad id!"})
    assert response.headers["X-Request-Id"] != "bad id!"
    assert len(response.headers["X-Request-Id"]) == 16


def session(turn: Any, guard: TurnGuard, metrics: StreamMetrics) -> StreamSession:
    guard.claim("agent-1")
    return StreamSession("req", "agent-1", turn, guard, metrics)


async def test_body_never_entered_closes_the_turn_cancels_the_run_and_frees_the_agent() -> None:
    guard, metrics, turn = TurnGuard(), StreamMetrics(), FakeTurn(endless(Text("x")))
    s = session(turn, guard, metrics)
    body = PipelineBody(open_pipeline(partial_source(turn.stream)), s.finalize)
    await body.abandon()
    await body.abandon()  # at most once
    assert turn.closed
    assert turn.cancelled
    assert not guard.busy("agent-1")
    assert metrics.ended == {"finished": 0, "cancelled": 1, "errored": 0}


async def test_a_stalled_client_ends_the_body_quietly_and_frees_everything() -> None:
    guard, metrics = TurnGuard(), StreamMetrics()
    stream = endless(Text("x"))
    s = session(FakeTurn(stream), guard, metrics)
    pipeline = open_pipeline(partial_source(stream), _encode_with_timeout)
    with anyio.fail_after(10):
        async with PipelineBody(pipeline, s.finalize) as body:
            async for _ in body:
                await anyio.sleep_forever()  # never take another frame
    assert stream.closed
    assert not guard.busy("agent-1")
    assert metrics.ended["cancelled"] == 1


async def test_an_error_event_counts_as_errored() -> None:
    guard, metrics = TurnGuard(), StreamMetrics()
    stream = FakeStream([Text("x"), Error("boom", "llm_api_error")])
    s = session(FakeTurn(stream), guard, metrics)
    from functools import partial

    from pipeline.tap import tap

    async with PipelineBody(
        open_pipeline(partial_source(stream), partial(tap, observe=s.observe), encode_sse), s.finalize
    ) as body:
        frames = [f async for f in body]
    assert len(frames) == 2
    assert metrics.ended["errored"] == 1


def partial_source(stream: FakeStream) -> Any:
    from functools import partial

    return partial(read_source, stream)


async def _encode_with_timeout(recv: Any, send: Any) -> None:
    await encode_sse(recv, send, send_timeout=0.05)


async def test_while_draining_new_streams_are_refused_with_503(app: Quart) -> None:
    agent_id = await new_agent(app, "late")
    draining = svc(app).draining
    assert draining is not None
    draining.set()
    response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "hi"})
    assert response.status_code == 503
    assert (await response.get_json())["error"] == "shutting_down"
