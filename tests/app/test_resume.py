"""Resuming a dropped stream: ``id:`` positions, ``Last-Event-ID``, the grace period, the stop button.

The in-memory Letta numbers a background turn's chunks and replays a run from any
position, as Letta 0.16.8 with Redis does (tests/integration prove the real one).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from quart import Quart

from app.factory import create_app
from app.services import EXTENSION, Services
from app.settings import Settings
from pipeline.events import Done, Event, Text
from pipeline.sse import SSEParser
from pipeline.wire import parse_event

pytestmark = pytest.mark.anyio

WORDS = [f" w{i}" for i in range(20)]
FULL = "".join(WORDS)


def svc(app: Quart) -> Services:
    found: Services = app.extensions[EXTENSION]
    return found


async def new_agent(app: Quart, user: str = "ada") -> str:
    response = await app.test_client().post("/agents", json={"user_id": user})
    agent_id: str = (await response.get_json())["agent_id"]
    return agent_id


class Reader:
    """What a client got from one stream: complete frames only, and the last event id."""

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.events: list[Event] = []

    def feed(self, data: bytes) -> None:
        for sse in self.parser.feed(data):
            event = parse_event(sse.data)
            if event is not None:
                self.events.append(event)

    @property
    def last_id(self) -> str:
        return self.parser.decoder.last_event_id

    @property
    def text(self) -> str:
        return "".join(e.content for e in self.events if isinstance(e, Text))


@asynccontextmanager
async def streaming(app: Quart, agent_id: str, min_chars: int, *, with_id: bool = True) -> AsyncIterator[Any]:
    """An open ``/chat/stream`` connection, read until some answer text (and an id) arrived; yields it and
    what it read so far."""
    reader = Reader()
    body = json.dumps({"agent_id": agent_id, "message": "hi", "user_id": "ada"}).encode()
    async with app.test_client().request("/chat/stream", method="POST") as connection:
        await connection.send(body)
        await connection.send_complete()
        with anyio.fail_after(5):
            while (with_id and not reader.last_id) or len(reader.text) < min_chars:
                reader.feed(await connection.receive())
        yield connection, reader


async def drop_mid_answer(app: Quart, agent_id: str, min_chars: int = 4, *, with_id: bool = True) -> Reader:
    """Stream until some answer text arrived, then drop the connection; wait until the service noticed."""
    async with streaming(app, agent_id, min_chars, with_id=with_id) as (connection, reader):
        await connection.disconnect()
    await until(lambda: not svc(app).metrics.active)
    return reader


async def resume(app: Quart, agent_id: str, last_id: str, user: str = "ada") -> tuple[int, Reader, Any]:
    response = await app.test_client().post(
        "/chat/stream",
        json={"agent_id": agent_id, "message": "hi", "user_id": user},
        headers={"Last-Event-ID": last_id},
    )
    reader = Reader()
    if response.status_code == 200:
        reader.feed(await response.get_data())
        return 200, reader, None
    return response.status_code, reader, await response.get_json()


@pytest.fixture
async def app(letta: Any) -> AsyncIterator[Quart]:
    letta.agents.messages.reply = WORDS
    letta.store.hold_after = 8  # the turn is still running when the client drops
    quart = create_app(Settings(throttle_window=0.0, resume_grace=30.0), client=letta)
    async with quart.test_app():
        yield quart


async def test_frames_carry_run_and_chunk_positions_starting_at_zero(app: Quart, letta: Any) -> None:
    letta.store.hold_after = None
    agent_id = await new_agent(app)
    response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "hi"})
    data = await response.get_data(as_text=True)
    ids = [line[4:] for line in data.splitlines() if line.startswith("id: ")]
    run_id = ids[0].rsplit(":", 1)[0]
    assert ids[0] == f"{run_id}:0"
    assert [int(i.rsplit(":", 1)[1]) for i in ids] == sorted(int(i.rsplit(":", 1)[1]) for i in ids)
    assert {i.rsplit(":", 1)[0] for i in ids} == {run_id}


async def test_a_dropped_stream_resumes_with_no_text_repeated_or_lost(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    first = await drop_mid_answer(app, agent_id)
    assert 0 < len(first.text) < len(FULL)
    assert letta.agents.messages.cancelled == []  # the run goes on, waiting for its client
    assert svc(app).guard.busy(agent_id)
    refused = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "new"})
    assert refused.status_code == 409  # still the same turn: a new message would interleave
    letta.store.go.set()

    status, second, _ = await resume(app, agent_id, first.last_id)

    assert status == 200
    assert first.text + second.text == FULL
    assert isinstance(second.events[-1], Done)
    run_id, seq = first.last_id.rsplit(":", 1)
    assert letta.runs.messages.resumed == [(run_id, int(seq))]
    assert len(letta.agents.messages.streams) == 1  # the message was sent to the agent once
    assert not svc(app).guard.busy(agent_id)
    assert letta.agents.messages.cancelled == []
    assert "letta_stream_streams_resumed_total 1.0" in await (await app.test_client().get("/metrics")).get_data(
        as_text=True
    )


async def test_a_stream_dropped_before_any_text_resumes_from_the_start(app: Quart, letta: Any) -> None:
    letta.store.hold_after = 1  # only the first ping went out
    agent_id = await new_agent(app)
    first = await drop_mid_answer(app, agent_id, min_chars=0)
    assert first.last_id.endswith(":0")
    letta.store.go.set()
    status, second, _ = await resume(app, agent_id, first.last_id)
    assert (status, second.text) == (200, FULL)


async def test_a_client_that_does_not_come_back_has_its_run_cancelled_after_the_grace(letta: Any) -> None:
    letta.agents.messages.reply = WORDS
    letta.store.hold_after = 8
    quart = create_app(Settings(throttle_window=0.0, resume_grace=0.3), client=letta)
    async with quart.test_app():
        agent_id = await new_agent(quart)
        await drop_mid_answer(quart, agent_id)
        assert letta.agents.messages.cancelled == []
        await until(lambda: not svc(quart).guard.busy(agent_id))
        await anyio.sleep(0.1)  # the cancel queue sends it
        assert letta.agents.messages.cancelled == [agent_id]
        assert [r.status for r in letta.store.runs.values()] == ["cancelled"]


async def test_the_stop_button_cancels_a_detached_turn_at_once(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    await drop_mid_answer(app, agent_id)
    response = await app.test_client().post("/chat/cancel", json={"agent_id": agent_id, "user_id": "ada"})
    assert response.status_code == 202
    assert not svc(app).guard.busy(agent_id)
    await anyio.sleep(0.1)
    assert letta.agents.messages.cancelled == [agent_id]


async def test_stop_is_refused_for_someone_elses_agent(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    response = await app.test_client().post("/chat/cancel", json={"agent_id": agent_id, "user_id": "mallory"})
    assert response.status_code == 404
    response = await app.test_client().post("/chat/cancel", json={"user_id": "ada"})
    assert (response.status_code, (await response.get_json())["field"]) == (400, "agent_id")


async def test_a_detached_run_letta_reports_finished_does_not_block_the_next_message(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    await drop_mid_answer(app, agent_id)
    for run in letta.store.runs.values():
        run.status = "completed"
    letta.store.hold_after = None
    response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "next"})
    assert response.status_code == 200
    await response.get_data()
    assert letta.agents.messages.cancelled == []


@pytest.mark.parametrize(
    ("last_id", "status", "field"),
    [("nonsense", 400, "Last-Event-ID"), ("run-1:x", 400, "Last-Event-ID"), ("run-404:3", 404, None)],
)
async def test_a_bad_or_unknown_position_is_refused(app: Quart, last_id: str, status: int, field: str | None) -> None:
    agent_id = await new_agent(app)
    code, _, body = await resume(app, agent_id, last_id)
    assert code == status
    assert body.get("field") == field
    assert not svc(app).guard.busy(agent_id)


async def test_no_one_resumes_another_students_run(app: Quart, letta: Any) -> None:
    ada, eve = await new_agent(app, "ada"), await new_agent(app, "eve")
    first = await drop_mid_answer(app, ada)
    code, _, _ = await resume(app, eve, first.last_id, user="eve")  # eve's own agent, ada's run
    assert code == 404
    code, _, _ = await resume(app, ada, first.last_id, user="eve")  # ada's agent
    assert code == 404
    assert svc(app).guard.busy(ada)  # ada's turn still waits for ada


async def drop_on_a_service_that_then_stops(letta: Any) -> tuple[str, Reader]:
    """A turn dropped mid-answer on a service instance that is gone by the time the client comes back."""
    letta.agents.messages.reply = WORDS
    letta.store.hold_after = 8
    first_app = create_app(Settings(throttle_window=0.0), client=letta)
    async with first_app.test_app():
        agent_id = await new_agent(first_app)
        return agent_id, await drop_mid_answer(first_app, agent_id)


async def test_a_restarted_service_resumes_a_run_it_never_held(letta: Any) -> None:
    agent_id, first = await drop_on_a_service_that_then_stops(letta)
    letta.store.go.set()
    second_app = create_app(Settings(throttle_window=0.0), client=letta)
    async with second_app.test_app():
        status, second, _ = await resume(second_app, agent_id, first.last_id)
    assert (status, first.text + second.text) == (200, FULL)


async def test_without_redis_in_letta_streams_work_without_positions(letta: Any) -> None:
    letta.store.redis = False
    quart = create_app(Settings(throttle_window=0.0), client=letta)
    async with quart.test_app():
        agent_id = await new_agent(quart)
        for _ in range(2):
            response = await quart.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "hi"})
            data = await response.get_data(as_text=True)
            assert "id:" not in data
            assert '"type":"done"' in data
        assert svc(quart).resume is False
        letta.store.hold_after = 3
        await drop_mid_answer(quart, agent_id, min_chars=1, with_id=False)
        assert not svc(quart).guard.busy(agent_id)  # nothing to resume: cancelled at once, as before
        await anyio.sleep(0.1)
        assert letta.agents.messages.cancelled == [agent_id]


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``condition`` (state of the service under test, which has no event to wait on)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_a_draining_service_cancels_the_turns_waiting_for_their_clients(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    await drop_mid_answer(app, agent_id)
    assert letta.agents.messages.cancelled == []
    draining = svc(app).draining
    assert draining is not None
    draining.set()  # SIGTERM: nobody will be here to resume them
    await until(lambda: not svc(app).guard.busy(agent_id))
    await until(lambda: letta.agents.messages.cancelled == [agent_id])


async def test_a_turn_that_cannot_be_read_again_is_410_and_frees_the_agent(letta: Any) -> None:
    agent_id, first = await drop_on_a_service_that_then_stops(letta)
    for run in letta.store.runs.values():
        run.background = False  # e.g. Letta lost it, or it was never resumable
    second_app = create_app(Settings(throttle_window=0.0), client=letta)
    async with second_app.test_app():
        status, _, body = await resume(second_app, agent_id, first.last_id)
        assert (status, body["error"]) == (410, "not_resumable")
        assert not svc(second_app).guard.busy(agent_id)


async def test_a_resume_that_beats_the_old_stream_noticing_the_drop_waits_for_it(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    async with streaming(app, agent_id, 4) as (connection, first):
        assert svc(app).metrics.active == 1  # the old stream is still attached (held mid-answer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.disconnect)  # the drop reaches the service while the resume comes in
            status, second, _ = await resume(app, agent_id, first.last_id)
    assert (status, first.text + second.text) == (200, FULL)
    detached = svc(app).detached
    assert detached is not None
    assert detached.adopted_total == 1  # taken over from the old stream, not refused as busy


async def test_a_held_turn_letta_refuses_to_read_again_is_410_and_frees_the_agent(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    first = await drop_mid_answer(app, agent_id)
    for run in letta.store.runs.values():
        run.background = False  # Letta answers the reopen with 400
    status, _, body = await resume(app, agent_id, first.last_id)
    assert (status, body["error"]) == (410, "not_resumable")
    assert not svc(app).guard.busy(agent_id)
    await until(lambda: letta.agents.messages.cancelled == [agent_id])  # taken over, unreadable: not left running
