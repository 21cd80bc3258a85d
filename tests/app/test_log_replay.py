"""Property: a turn resumed after any frame repeats nothing and loses nothing.

The real runner (:class:`app.turn_runner.TurnRunner`) frames a random turn — text,
reasoning and status events, merged by the throttle — into the turn's log and hands
frames to a live client that drops after a random number of them; the real resume path
(:meth:`app.stream_session.StreamSession.follow`) then reads the rest after the last id
the client got.  What the client saw plus what it got on resume must be exactly the
turn, under asyncio and trio.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from letta_client.types.agents.letta_streaming_response import LettaStopReason

from app.frame_ids import parse_frame_id
from app.metrics import StreamMetrics
from app.store import LogFrame
from app.store.memory import MemoryStore
from app.stream_session import StreamSession
from app.turn_host import TurnHost
from app.turn_machine import Claim
from app.turn_runner import TurnRunner
from pipeline.events import Done, Event, Reasoning, Status, Text
from pipeline.handoff import HandoffReceive, HandoffSend, create_handoff
from pipeline.letta_map import LettaMapper
from pipeline.sse import SSEParser
from pipeline.wire import parse_event
from tests.pipeline.fakes import FakeStream

AGENT = "agent-1"
TURN = "turn-1"

events = st.lists(
    st.one_of(
        st.builds(Text, st.text(min_size=1, max_size=12)),
        st.builds(Reasoning, st.text(min_size=1, max_size=12)),
        st.builds(Status, st.sampled_from(["Thinking...", "Using x..."])),
    ),
    max_size=30,
)


class _Canceller:
    def submit(self, agent_id: str, run_id: str | None) -> None:
        raise AssertionError("nothing is cancelled in a turn that runs to its end")


class _Turn:
    """A Letta turn made of our own events (the mapper passes them through), ending with a stop reason."""

    def __init__(self, items: list[Any]) -> None:
        self.agent_id = AGENT
        self.run_id: str | None = None
        self.stream = FakeStream([*items, LettaStopReason(stop_reason="end_turn", message_type="stop_reason")])

    async def chunks(self) -> Any:
        async for chunk in self.stream:
            yield chunk

    def pushing(self) -> None:
        return None

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()


def parse(data: bytes) -> list[Event]:
    return [e for sse in SSEParser().feed(data) if (e := parse_event(sse.data)) is not None]


def flat(items: list[Event]) -> list[tuple[str, str]]:
    """Events as (kind, content), deltas split into characters: merging does not change this."""
    out: list[tuple[str, str]] = []
    for event in items:
        if isinstance(event, (Text, Reasoning)):
            out.extend((type(event).__name__, c) for c in event.content)
        elif isinstance(event, Status):
            out.append(("Status", event.content))
        else:
            out.append((type(event).__name__, ""))
    return out


async def _receive(recv: HandoffReceive[list[LogFrame]]) -> list[LogFrame]:
    """The next frames the runner handed out (every batch pending, as one list)."""
    while True:
        try:
            return [frame for batch in recv.receive_nowait() for frame in batch]
        except anyio.WouldBlock:
            await recv.wait()


async def scenario(items: list[Event], window: float, drop_after: int) -> None:
    store = MemoryStore()
    host = TurnHost(store, _Canceller(), grace=30.0)  # type: ignore[arg-type]
    await host.apply(AGENT, Claim(TURN, host.owner, "conn-1", 10.0))
    handoff: tuple[HandoffSend[list[LogFrame]], HandoffReceive[list[LogFrame]]] = create_handoff(1)
    send, recv = handoff
    runner = TurnRunner(host, store, _Turn(items), TURN, LettaMapper(), send, window=window)  # type: ignore[arg-type]
    seen = b""
    last_id = f"{TURN}:0"
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run)
        with recv:
            taken = 0
            while taken < drop_after:
                try:
                    batch = await _receive(recv)
                except anyio.EndOfStream:
                    break
                for frame in batch[: drop_after - taken]:  # the client drops inside a write, after a whole frame
                    seen += frame.data
                    last_id = f"{TURN}:{frame.seq}"
                    taken += 1
        # the client dropped here; the runner goes on logging to the end
    assert await store.record(AGENT) is None  # finished and released
    session = StreamSession("req", AGENT, TURN, "conn-2", host, StreamMetrics(), grace=30.0, resumed=True)
    rest = b""
    with anyio.fail_after(10):
        async for chunk in session.follow(parse_frame_id(last_id).seq):
            rest += chunk
    got = parse(seen) + parse(rest)
    assert isinstance(got[-1], Done)
    assert flat(got[:-1]) == flat(items)  # nothing repeated, nothing lost, in order
    whole = parse(b"".join(f.data for f in await store.log_read(TURN, 0)))
    assert flat(whole) == flat(got)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=events, window=st.sampled_from([0.0, 0.001, 0.01]), drop_after=st.integers(0, 40))
def test_resume_after_any_frame_repeats_nothing_and_loses_nothing(
    backend: str, items: list[Event], window: float, drop_after: int
) -> None:
    anyio.run(scenario, items, window, drop_after, backend=backend)
