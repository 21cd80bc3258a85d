"""A stream's life around its turn: one turn per agent, the agent free the moment a turn is done,
metrics, request ids, and a session's end of life (detach with a grace, or cancel at once)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import attrs
import pytest
from quart import Quart

from app.cancels import RunCanceller
from app.metrics import StreamMetrics
from app.services import EXTENSION, Services
from app.store import LogFrame, LogMeta
from app.store.memory import MemoryStore
from app.stream_body import StreamBody, _Ending, pump
from app.stream_session import RESTARTING, StreamSession
from app.turn_host import TurnHost
from app.turn_machine import Adopt, Claim, Finish, Started
from app.turn_runner import TurnRunner
from pipeline.events import Done, Error, Text
from pipeline.halt import Halt
from pipeline.handoff import HandoffReceive, HandoffSend, create_handoff
from pipeline.sse import SSEEncoder, decode_events
from tests.collector import alive, collector_held

from .fake_letta import make_fake

pytestmark = pytest.mark.anyio


def svc(app: Quart) -> Services:
    found: Services = app.extensions[EXTENSION]
    return found


async def new_agent(app: Quart, user: str) -> str:
    response = await app.test_client().post("/agents", json={"user_id": user})
    agent_id: str = (await response.get_json())["agent_id"]
    return agent_id


async def test_second_message_while_a_turn_runs_is_409(app: Quart, letta: Any) -> None:
    letta.store.hold_after = 3  # the first turn is still running
    agent_id = await new_agent(app, "busy")
    body = json.dumps({"agent_id": agent_id, "message": "first"}).encode()
    headers = {"Content-Type": "application/json"}
    async with app.test_client().request("/chat/stream", method="POST", headers=headers) as connection:
        await connection.send(body)
        await connection.send_complete()
        await connection.receive()  # the opening frame: the turn is claimed
        for path in ("/chat", "/chat/stream"):
            response = await app.test_client().post(path, json={"agent_id": agent_id, "message": "again"})
            assert response.status_code == 409, path
            assert (await response.get_json())["error"] == "turn_in_progress"
        letta.store.go.set()
    assert int(svc(app).metrics.refused) == 2
    assert [text for _, text in letta.agents.messages.sent] == ["first"]  # the refused ones never reached it
    assert "letta_stream_turns_refused_total 2.0" in await (await app.test_client().get("/metrics")).get_data(
        as_text=True
    )


async def test_agent_is_free_the_moment_each_kind_of_turn_is_done(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app, "free")
    client = app.test_client()
    for path in ("/chat", "/chat/stream", "/chat/stream", "/chat"):
        if path == "/chat":
            response = await client.post(path, json={"agent_id": agent_id, "message": "hi"})
            assert response.status_code == 200
        else:
            await stream_until_done(app, agent_id)  # the next message goes out before this body closes
        assert await svc(app).host.store.record(agent_id) is None, path
    assert len(letta.agents.messages.sent) == 6  # with the two sent right away


async def stream_until_done(app: Quart, agent_id: str) -> None:
    """Read a turn until its ``done`` event, then at once send the next message (no waiting, no race)."""
    body = json.dumps({"agent_id": agent_id, "message": "hi"}).encode()
    got = b""
    async with app.test_client().request(
        "/chat/stream", method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        await connection.send(body)
        await connection.send_complete()
        with anyio.fail_after(5):
            while b'"type":"done"' not in got:
                got += await connection.receive()
        response = await app.test_client().post("/chat", json={"agent_id": agent_id, "message": "right away"})
        assert response.status_code == 200  # not 409: the agent was released before `done` went out
    assert isinstance(list(decode_events([got]))[-1], Done)


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


async def test_while_draining_new_streams_are_refused_with_503(app: Quart) -> None:
    agent_id = await new_agent(app, "late")
    svc(app).draining.set()
    response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "hi"})
    assert response.status_code == 503
    assert (await response.get_json())["error"] == "shutting_down"


# ---------------------------------------------------------------- one session, without HTTP


@attrs.define
class RecordingCanceller(RunCanceller):
    submitted: list[tuple[str, str | None]] = attrs.Factory(list)

    def submit(self, agent_id: str, run_id: str | None) -> None:
        self.submitted.append((agent_id, run_id))


AGENT, TURN, READER = "agent-1", "turn-1", "conn-1"


async def claimed(grace: float) -> tuple[StreamSession, TurnHost, RecordingCanceller, StreamMetrics]:
    """A session of a turn claimed by this process (no runner: the session alone is under test)."""
    canceller = RecordingCanceller(make_fake())
    host = TurnHost(MemoryStore(), canceller, grace=30.0, lease=10.0)
    await host.apply(AGENT, Claim(TURN, host.owner, READER, host.lease))
    metrics = StreamMetrics()
    return StreamSession("req", AGENT, TURN, READER, host, metrics, grace=grace), host, canceller, metrics


def body_of(
    session: StreamSession,
    frames: list[LogFrame],
    *,
    send_timeout: float = 5.0,
    keepalive: float = 15.0,
    close: bool = True,
) -> tuple[StreamBody[list[LogFrame]], HandoffSend[list[LogFrame]]]:
    """A body reading ``frames`` as the runner would hand them out (and the runner's end, closed if ``close``)."""
    handoff: tuple[HandoffSend[list[LogFrame]], HandoffReceive[list[LogFrame]]] = create_handoff(len(frames) + 1)
    send, recv = handoff
    for one in frames:
        send.send_nowait([one])
    if close:
        send.close()
    session.attach_live(recv)
    body = StreamBody(session, recv, session.render_live, keepalive=keepalive, send_timeout=send_timeout)
    return body, send


def frame(seq: int, event: Any) -> LogFrame:
    return LogFrame(seq, SSEEncoder(retry_ms=None).encode(event), isinstance(event, (Done, Error)))


async def test_body_never_entered_detaches_the_turn_with_its_grace() -> None:
    session, host, canceller, metrics = await claimed(grace=5.0)
    body, _ = body_of(session, [frame(1, Text("x"))])
    await body.after_response()
    await body.after_response()  # at most once
    record = await host.store.record(AGENT)
    assert record is not None
    assert record.reader is None
    assert record.deadline is not None
    assert 4.0 < record.deadline - await host.store.clock() <= 5.0
    assert canceller.submitted == []  # the run goes on: the client may come back
    assert metrics.ended == {"finished": 0, "cancelled": 1, "errored": 0}


async def test_body_never_entered_with_resume_off_cancels_the_run_at_once() -> None:
    session, host, canceller, metrics = await claimed(grace=0.0)
    await body_of(session, [frame(1, Text("x"))])[0].after_response()
    assert canceller.submitted == []  # the run is not known yet: it is cancelled as soon as it is
    record = await host.store.record(AGENT)
    assert record is not None
    assert record.stopping
    await host.apply(AGENT, Started(record.turn_id, "run-1"))
    assert canceller.submitted == [(AGENT, "run-1")]
    assert metrics.ended["cancelled"] == 1


async def test_a_finished_stream_does_not_detach() -> None:
    session, host, canceller, metrics = await claimed(grace=5.0)
    body, _ = body_of(session, [frame(1, Text("x")), frame(2, Done("end_turn"))])
    async with body:
        got = b"".join([chunk async for chunk in body])
    assert b"retry: 3000\nid: turn-1:0\n" in got
    assert b'"type":"done"' in got
    record = await host.store.record(AGENT)
    assert record is not None
    assert record.reader == READER
    assert metrics.ended["finished"] == 1
    assert canceller.submitted == []


async def test_a_stalled_client_ends_the_body_quietly_and_detaches() -> None:
    session, host, _canceller, metrics = await claimed(grace=5.0)
    body, _ = body_of(session, [frame(n, Text("x")) for n in range(1, 50)], send_timeout=0.05)
    with anyio.fail_after(10):
        with anyio.CancelScope() as write:  # what the connection handler gives the body
            body.cancel_write = write.cancel
            async with body:
                async for _ in body:
                    await anyio.sleep_forever()  # a write that never finishes
        await body.after_response()
    assert write.cancelled_caught
    record = await host.store.record(AGENT)
    assert record is not None
    assert record.reader is None
    assert record.deadline is not None
    assert metrics.ended["cancelled"] == 1


async def test_an_error_event_counts_as_errored() -> None:
    session, _, _, metrics = await claimed(grace=5.0)
    body, _ = body_of(session, [frame(1, Text("x")), frame(2, Error("boom", "llm_api_error"))])
    async with body:
        chunks = [f async for f in body]
    assert chunks[0].startswith(b"retry: 3000")  # the opening, then the text and the error in one write
    assert [type(e) for e in decode_events(chunks[1:])] == [Text, Error]
    assert metrics.ended["errored"] == 1


# ---------------------------------------------------------------- the stream body's own timers and endings


async def drive(body: StreamBody[Any], react: Callable[[list[bytes]], Awaitable[object]] | None = None) -> list[bytes]:
    """Read ``body`` as Quart does (bounded in time); after each chunk, ``await react(chunks so far)``."""
    chunks: list[bytes] = []
    with anyio.fail_after(10):
        async with body:
            async for chunk in body:
                chunks.append(chunk)
                if react is not None:
                    await react(chunks)
    return chunks


async def test_an_idle_body_writes_keepalives_and_then_the_frames() -> None:
    session, _, _, _ = await claimed(grace=5.0)
    body, send = body_of(session, [], keepalive=0.05, close=False)

    async def react(chunks: list[bytes]) -> None:
        if chunks.count(b": keepalive\n\n") == 2:
            send.send_nowait([frame(1, Text("x")), frame(2, Done("end_turn"))])

    chunks = await drive(body, react)
    assert chunks[1:3] == [b": keepalive\n\n"] * 2  # after the opening, nothing to say for a while
    assert [type(e) for e in decode_events(chunks[3:])] == [Text, Done]  # then both frames in one write


async def test_frames_that_keep_coming_leave_no_room_for_a_keepalive() -> None:
    session, _, _, _ = await claimed(grace=5.0)
    body, send = body_of(session, [], keepalive=0.2, close=False)

    async def react(chunks: list[bytes]) -> None:
        await anyio.sleep(0.02)
        n = len(chunks)
        send.send_nowait([frame(n, Done("end_turn") if n == 30 else Text("x"))])

    chunks = await drive(body, react)
    assert b": keepalive\n\n" not in chunks[1:]  # 30 writes over ~0.6 s, none 0.2 s after the last
    assert session.ended


async def test_draining_ends_the_stream_with_the_restart_comment_and_detaches() -> None:
    session, host, _, metrics = await claimed(grace=5.0)
    session.draining = draining = Halt()
    body, _ = body_of(session, [frame(1, Text("x"))], close=False)

    async def react(chunks: list[bytes]) -> None:
        if len(chunks) == 2:
            draining.set()

    chunks = await drive(body, react)
    assert chunks[-1] == RESTARTING  # no terminal event: the client resumes elsewhere
    assert draining.watchers == 0  # forgotten when the body is done
    record = await host.store.record(AGENT)
    assert record is not None
    assert record.reader is None  # detached: the turn waits for the resume
    assert metrics.ended["cancelled"] == 1


async def test_a_body_started_while_draining_ends_at_once() -> None:
    session, _, _, _ = await claimed(grace=5.0)
    session.draining = draining = Halt()
    draining.set()
    chunks = await drive(body_of(session, [frame(1, Text("x"))], close=False)[0])
    assert chunks[-1] == RESTARTING
    assert len(chunks) <= 3


async def test_another_connection_adopting_the_turn_ends_this_one_quietly() -> None:
    session, host, _, _ = await claimed(grace=5.0)
    body, _ = body_of(session, [frame(1, Text("x"))], close=False)

    async def react(chunks: list[bytes]) -> None:
        if len(chunks) == 2:
            await host.apply(AGENT, Adopt(TURN, "conn-2", host.owner, host.lease))

    chunks = await drive(body, react)
    assert len(chunks) == 2  # nothing after the frame it had: no restart comment, no terminal event
    assert b'"content":"x"' in chunks[1]
    assert READER not in host._readers
    record = await host.store.record(AGENT)
    assert record is not None
    assert record.reader == "conn-2"  # this connection's end did not detach the new reader


async def test_the_last_write_is_under_the_send_timeout_too() -> None:
    session, _, _, _ = await claimed(grace=5.0)
    body, _ = body_of(session, [frame(1, Done("end_turn"))], send_timeout=0.05)
    with anyio.fail_after(10):
        with anyio.CancelScope() as write:
            body.cancel_write = write.cancel
            async with body:
                async for _ in body:
                    pass
            await anyio.sleep_forever()  # Quart's final (empty) write to a client that stopped reading
        await body.after_response()
    assert write.cancelled_caught
    assert session.ended


async def test_a_resume_pumps_the_log_through_one_task_and_closes_it() -> None:
    _, host, _, metrics = await claimed(grace=5.0)
    await host.store.log_open(LogMeta(TURN, AGENT), 60.0)
    await host.store.log_append(TURN, [frame(n, e) for n, e in enumerate([Text("a"), Text("b"), Done("end_turn")], 1)])
    await host.apply(AGENT, Finish(TURN, host.owner))
    resumed = StreamSession("req", AGENT, TURN, "conn-2", host, metrics, grace=5.0, resumed=True)
    handoff: tuple[HandoffSend[bytes], HandoffReceive[bytes]] = create_handoff(64)
    send, recv = handoff
    follow = resumed.follow(1)
    chunks = await drive(
        StreamBody(resumed, recv, b"".join, keepalive=15.0, send_timeout=5.0, pump=partial(pump, follow, send))
    )
    assert b"id: " not in chunks[0]  # a resume's opening names no new position
    assert [type(e) for e in decode_events(chunks[1:])] == [Text, Done]  # after frame 1: "b", then done
    assert follow.ag_frame is None  # the log reader was closed
    assert metrics.ended["finished"] == 1


async def test_a_write_longer_than_the_keepalive_does_not_put_the_next_keepalive_off() -> None:
    session, _, _, _ = await claimed(grace=5.0)
    body, send = body_of(session, [frame(1, Text("x"))], keepalive=0.05, send_timeout=30.0, close=False)

    async def react(chunks: list[bytes]) -> None:
        if chunks[-1] == b": keepalive\n\n":
            send.close()
        else:
            await anyio.sleep(0.12)  # a slow write: the timer fires while it lasts

    with anyio.fail_after(2):  # the send timeout (30 s) must not be what brings the next keepalive
        chunks = await drive(body, react)
    assert b": keepalive\n\n" in chunks


async def test_a_finished_stream_leaves_nothing_for_the_garbage_collector(app: Quart) -> None:
    """A stream's body, its session and its turn's runner are freed by reference counting once the
    turn is over, not left in cycles for the collector (whose passes stall every other stream)."""
    kinds = (StreamBody, _Ending, StreamSession, TurnRunner)
    agent_id = await new_agent(app, "collector")
    await stream_until_done(app, agent_id)  # the first turn builds what the app keeps (clients, the agent index)
    with collector_held():
        response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "hi"})
        assert isinstance(list(decode_events([await response.get_data()]))[-1], Done)
        del response
        for _ in range(500):  # the turn is released just after its last frame: give it up to 5 s
            if not alive(*kinds):
                break
            await anyio.sleep(0.01)
        remaining = alive(*kinds)
    assert remaining == []
