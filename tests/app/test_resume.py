"""Resuming a dropped stream through the HTTP API: ``<turn>:<seq>`` ids, ``Last-Event-ID``, the grace
period, the stop button, takeover of a turn whose runner died, draining, and resume turned off.

The in-memory Letta runs foreground turns as Letta 0.16.8 does: a run goes on when its client
closes the stream, and its whole answer can be read back from the runs API (tests/integration
prove the real one).  ``hold_after`` keeps a turn running mid-answer until ``go`` is set.
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
from app.store.memory import MemoryStore
from app.stream_session import RESTARTING
from app.turn_machine import TurnRecord
from pipeline.events import Done, Event, Text
from pipeline.sse import SSEParser
from pipeline.wire import parse_event

pytestmark = pytest.mark.anyio

WORDS = [f" w{i}" for i in range(20)]
FULL = "".join(WORDS)
HOLD = 8
"""The run pauses before this chunk (ping, reasoning, then six words out) until ``go``."""


def svc(app: Quart) -> Services:
    found: Services = app.extensions[EXTENSION]
    return found


async def record(app: Quart, agent_id: str) -> TurnRecord | None:
    return await svc(app).host.store.record(agent_id)


async def new_agent(app: Quart, user: str = "ada") -> str:
    response = await app.test_client().post("/agents", json={"user_id": user})
    agent_id: str = (await response.get_json())["agent_id"]
    return agent_id


class Reader:
    """What a client got from one stream: complete frames only, and the last event id."""

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.events: list[Event] = []
        self.raw = b""

    def feed(self, data: bytes) -> None:
        self.raw += data
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

    @property
    def ended(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], Done)


@asynccontextmanager
async def streaming(
    app: Quart, agent_id: str, min_chars: int, *, last_id: str | None = None, user: str = "ada"
) -> AsyncIterator[Any]:
    """An open ``/chat/stream`` connection (a resume with ``last_id``), read until an id and at least
    ``min_chars`` of answer text arrived; yields it and what it read so far."""
    reader = Reader()
    body = json.dumps({"agent_id": agent_id, "message": "hi", "user_id": user}).encode()
    headers = {"Content-Type": "application/json"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    async with app.test_client().request("/chat/stream", method="POST", headers=headers) as connection:
        await connection.send(body)
        await connection.send_complete()
        with anyio.fail_after(5):
            while not reader.last_id or len(reader.text) < min_chars:
                reader.feed(await connection.receive())
        yield connection, reader


async def read_to_end(connection: Any, reader: Reader) -> None:
    with anyio.fail_after(5):
        while not reader.ended:
            reader.feed(await connection.receive())


async def drop_mid_answer(app: Quart, agent_id: str, min_chars: int = 4) -> Reader:
    """Stream until some answer text arrived, then drop the connection; wait until the service noticed."""
    async with streaming(app, agent_id, min_chars) as (connection, reader):
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


async def until(condition: Callable[[], Any], within: float = 5.0) -> None:
    """Poll ``condition`` (state of the service under test, which has no event to wait on)."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def until_idle(app: Quart, agent_id: str, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while await record(app, agent_id) is not None:  # noqa: ASYNC110
            await anyio.sleep(0.01)


def settings(**changes: Any) -> Settings:
    return Settings(**{"throttle_window": 0.0, "resume_grace": 30.0, "drain_seconds": 0.5, **changes})


@pytest.fixture
def held(letta: Any) -> Any:
    letta.agents.messages.reply = WORDS
    letta.store.hold_after = HOLD  # the turn is still running when the client drops
    return letta


@pytest.fixture
async def app(held: Any) -> AsyncIterator[Quart]:
    quart = create_app(settings(), client=held)
    async with quart.test_app():
        yield quart


def runs(letta: Any) -> list[str]:
    return [run.status for run in letta.store.runs.values()]


async def test_frames_carry_the_turn_and_a_sequence_starting_at_zero(app: Quart, letta: Any) -> None:
    letta.store.go.set()
    agent_id = await new_agent(app)
    response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "hi"})
    data = await response.get_data(as_text=True)
    ids = [line[4:] for line in data.splitlines() if line.startswith("id: ")]
    turn_id = ids[0].rsplit(":", 1)[0]
    assert turn_id.startswith("turn-")
    assert turn_id not in {run.id for run in letta.store.runs.values()}
    assert [i.rsplit(":", 1) for i in ids] == [[turn_id, str(n)] for n in range(len(ids))]  # :0, :1, :2, …
    assert len(ids) > 3


async def test_a_dropped_stream_resumes_with_no_text_repeated_or_lost(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    first = await drop_mid_answer(app, agent_id)
    assert 0 < len(first.text) < len(FULL)
    assert letta.agents.messages.cancelled == []  # the run goes on, waiting for its client
    detached = await record(app, agent_id)
    assert detached is not None
    assert detached.reader is None
    assert detached.deadline is not None
    refused = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "new"})
    assert refused.status_code == 409  # still the same turn: a new message would interleave
    letta.store.go.set()

    status, second, _ = await resume(app, agent_id, first.last_id)

    assert status == 200
    assert first.text + second.text == FULL
    assert isinstance(second.events[-1], Done)
    assert letta.agents.messages.sent == [(agent_id, "hi")]  # the message reached the agent once
    assert await record(app, agent_id) is None
    assert letta.agents.messages.cancelled == []
    assert runs(letta) == ["completed"]
    assert int(svc(app).metrics.resumed) == 1


async def test_a_stream_dropped_before_any_text_resumes_from_the_start(app: Quart, letta: Any) -> None:
    letta.store.hold_after = 0  # nothing produced yet: only the opening frame went out
    agent_id = await new_agent(app)
    first = await drop_mid_answer(app, agent_id, min_chars=0)
    assert first.last_id.endswith(":0")
    assert first.events == []
    letta.store.go.set()
    status, second, _ = await resume(app, agent_id, first.last_id)
    assert (status, second.text) == (200, FULL)
    assert isinstance(second.events[-1], Done)


async def test_a_resume_after_the_turn_finished_replays_the_rest_from_the_log(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    first = await drop_mid_answer(app, agent_id)
    letta.store.go.set()
    await until_idle(app, agent_id)  # the runner read the turn to its end with nobody attached
    assert runs(letta) == ["completed"]
    status, second, _ = await resume(app, agent_id, first.last_id)
    assert (status, first.text + second.text) == (200, FULL)
    assert isinstance(second.events[-1], Done)
    assert len(letta.agents.messages.sent) == 1


async def test_a_client_that_does_not_come_back_has_its_run_cancelled_after_the_grace(held: Any) -> None:
    quart = create_app(settings(resume_grace=0.5), client=held)
    async with quart.test_app():
        agent_id = await new_agent(quart)
        await drop_mid_answer(quart, agent_id)
        assert held.agents.messages.cancelled == []
        await anyio.sleep(0.2)
        assert held.agents.messages.cancelled == []  # not before the grace is over
        await until_idle(quart, agent_id)
        assert held.agents.messages.cancelled == [agent_id]
        assert runs(held) == ["cancelled"]
        held.store.go.set()
        response = await quart.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "next"})
        assert response.status_code == 200  # the agent is free
        await response.get_data()


async def test_a_client_back_within_the_grace_keeps_its_run(held: Any) -> None:
    quart = create_app(settings(resume_grace=0.5), client=held)
    async with quart.test_app():
        agent_id = await new_agent(quart)
        first = await drop_mid_answer(quart, agent_id)
        metrics = quart.extensions["letta_stream"].metrics
        assert metrics.detached_turns == 1  # waiting for its client
        async with streaming(quart, agent_id, 0, last_id=first.last_id) as (connection, second):
            assert metrics.detached_turns == 0  # adopted
            await anyio.sleep(1.0)  # the first grace is long over
            assert held.agents.messages.cancelled == []
            assert runs(held) == ["running"]
            adopted = await record(quart, agent_id)
            assert adopted is not None
            assert adopted.reader is not None
            assert adopted.deadline is None
            held.store.go.set()
            await read_to_end(connection, second)
        assert first.text + second.text == FULL
        await until_idle(quart, agent_id)
        assert runs(held) == ["completed"]


async def test_a_resume_while_the_old_stream_is_still_attached_takes_the_turn_over_from_it(
    app: Quart, letta: Any
) -> None:
    agent_id = await new_agent(app)
    async with streaming(app, agent_id, 4) as (_old, first):  # noqa: SIM117 (the second needs the first's id)
        async with streaming(app, agent_id, 0, last_id=first.last_id) as (new, second):
            await until(lambda: svc(app).metrics.active == 1)  # the old connection was superseded
            letta.store.go.set()
            await read_to_end(new, second)
    assert first.text + second.text == FULL
    assert letta.agents.messages.cancelled == []
    assert runs(letta) == ["completed"]


async def test_the_stop_button_cancels_an_attached_turn_at_once(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    async with streaming(app, agent_id, 4) as (connection, reader):
        response = await app.test_client().post("/chat/cancel", json={"agent_id": agent_id, "user_id": "ada"})
        assert response.status_code == 202
        await read_to_end(connection, reader)  # the run ended: the stream ends with it
    assert reader.events[-1] == Done("cancelled", None, next(iter(letta.store.runs)))
    assert letta.agents.messages.cancelled == [agent_id]
    assert runs(letta) == ["cancelled"]
    await until_idle(app, agent_id)
    assert int(svc(app).metrics.stopped) == 1


async def test_the_stop_button_cancels_a_detached_turn_at_once(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    await drop_mid_answer(app, agent_id)
    response = await app.test_client().post("/chat/cancel", json={"agent_id": agent_id, "user_id": "ada"})
    assert response.status_code == 202
    await until(lambda: letta.agents.messages.cancelled == [agent_id], within=1.0)  # not after the 30 s grace
    await until_idle(app, agent_id, within=1.0)
    assert runs(letta) == ["cancelled"]


async def test_stop_is_refused_for_someone_elses_agent(app: Quart, letta: Any) -> None:
    agent_id = await new_agent(app)
    response = await app.test_client().post("/chat/cancel", json={"agent_id": agent_id, "user_id": "mallory"})
    assert response.status_code == 404
    response = await app.test_client().post("/chat/cancel", json={"user_id": "ada"})
    assert (response.status_code, (await response.get_json())["field"]) == (400, "agent_id")
    assert letta.agents.messages.cancelled == []


@pytest.mark.parametrize(
    ("last_id", "status", "error", "field"),
    [
        ("nonsense", 400, "invalid_request", "Last-Event-ID"),
        ("turn-1:x", 400, "invalid_request", "Last-Event-ID"),
        ("turn 1:3", 400, "invalid_request", "Last-Event-ID"),
        ("turn-404:3", 410, "not_resumable", None),
    ],
)
async def test_a_bad_or_unknown_position_is_refused(
    app: Quart, letta: Any, last_id: str, status: int, error: str, field: str | None
) -> None:
    agent_id = await new_agent(app)
    code, _, body = await resume(app, agent_id, last_id)
    assert (code, body["error"], body.get("field")) == (status, error, field)
    assert await record(app, agent_id) is None
    assert letta.agents.messages.sent == []  # a refused resume sends nothing to the agent


async def test_no_one_resumes_another_students_turn(app: Quart, letta: Any) -> None:
    ada, eve = await new_agent(app, "ada"), await new_agent(app, "eve")
    first = await drop_mid_answer(app, ada)
    code, _, body = await resume(app, eve, first.last_id, user="eve")  # eve's own agent, ada's turn
    assert (code, body["error"]) == (404, "not_found")
    code, _, _ = await resume(app, ada, first.last_id, user="eve")  # ada's agent
    assert code == 404
    still = await record(app, ada)
    assert still is not None
    assert still.reader is None
    assert await record(app, eve) is None


# ---------------------------------------------------------------- several processes, one store


async def test_a_turn_whose_runner_died_is_taken_over_from_lettas_run(held: Any) -> None:
    store = MemoryStore()
    first_app = create_app(settings(turn_lease=0.3), client=held, store=store)
    second_app = create_app(settings(turn_lease=0.3), client=held, store=store)
    async with first_app.test_app(), second_app.test_app():
        agent_id = await new_agent(first_app)
        first = await drop_mid_answer(first_app, agent_id)
        orphan = await store.record(agent_id)
        assert orphan is not None
        assert orphan.run_id is not None
        host = svc(first_app).host
        host._owned[orphan.turn_id].work.cancel()  # replica A's runner dies (no hand-off, no cancel)
        await until(lambda: host.running == 0)
        await anyio.sleep(0.4)  # its lease runs out
        assert held.store.runs[orphan.run_id].status == "running"  # the run goes on in Letta

        async def finish_the_run_later() -> None:
            await anyio.sleep(0.3)  # the takeover polls the run until it ends
            held.store.go.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_the_run_later)
            status, second, _ = await resume(second_app, agent_id, first.last_id)

        assert (status, first.text + second.text) == (200, FULL)
        assert isinstance(second.events[-1], Done)
        assert held.agents.messages.sent == [(agent_id, "hi")]
        assert held.runs.messages.listed == [orphan.run_id]  # the rest came from Letta's record of the run
        assert held.store.runs[orphan.run_id].status == "completed"
        assert held.agents.messages.cancelled == []
        assert await store.record(agent_id) is None
        response = await second_app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "next"})
        assert response.status_code == 200
        await response.get_data()


async def test_a_draining_service_ends_streams_resumably_and_another_replica_serves_the_rest(held: Any) -> None:
    store = MemoryStore()
    first_app = create_app(settings(), client=held, store=store)
    second_app = create_app(settings(), client=held, store=store)
    async with first_app.test_app(), second_app.test_app():
        agent_id = await new_agent(first_app)
        async with streaming(first_app, agent_id, 4) as (connection, first):
            svc(first_app).draining.set()  # SIGTERM on replica A
        # the body ended by itself (the context exited without a disconnect)
        first.feed(bytes(connection.response_data))
        assert first.raw.endswith(RESTARTING)  # no done, no error: a comment saying why
        assert not first.ended
        assert svc(first_app).host.running == 1  # the runner keeps going
        assert held.agents.messages.cancelled == []

        held.store.go.set()
        status, second, _ = await resume(second_app, agent_id, first.last_id)

        assert (status, first.text + second.text) == (200, FULL)
        assert isinstance(second.events[-1], Done)
        assert held.agents.messages.cancelled == []
        assert await store.record(agent_id) is None


async def test_with_resume_off_a_dropped_clients_run_is_cancelled_at_once(held: Any) -> None:
    quart = create_app(settings(resume=False), client=held)
    async with quart.test_app():
        agent_id = await new_agent(quart)
        first = await drop_mid_answer(quart, agent_id)
        await until(lambda: held.agents.messages.cancelled == [agent_id], within=1.0)
        await until_idle(quart, agent_id, within=1.0)
        assert runs(held) == ["cancelled"]
        code, _, body = await resume(quart, agent_id, first.last_id)
        assert (code, body["error"]) == (410, "not_resumable")  # nothing was logged


async def test_a_run_named_by_a_chunk_with_no_output_is_cancelled_when_its_client_leaves(letta: Any) -> None:
    """The run id reaches the turn's record as soon as a chunk names it — not only with the first output —
    so a client that leaves before any output (resume off) still has its run cancelled at once."""
    letta.agents.messages.reply = WORDS
    letta.store.hold_after = 2  # after the ping and the reasoning chunk, which (thinking off) says nothing
    quart = create_app(settings(resume=False), client=letta)
    async with quart.test_app():
        agent_id = await new_agent(quart)
        body = json.dumps({"agent_id": agent_id, "message": "hi", "enable_thinking": False}).encode()
        async with quart.test_client().request(
            "/chat/stream", method="POST", headers={"Content-Type": "application/json"}
        ) as connection:
            await connection.send(body)
            await connection.send_complete()
            await connection.receive()  # the opening frame; nothing else will come while the run is held
            await until(lambda: bool(letta.store.runs) and all(r.produced >= 2 for r in letta.store.runs.values()))
            await connection.disconnect()
        await until(lambda: letta.agents.messages.cancelled == [agent_id], within=2.0)
        assert runs(letta) == ["cancelled"]
        letta.store.go.set()
        await until_idle(quart, agent_id, within=2.0)
