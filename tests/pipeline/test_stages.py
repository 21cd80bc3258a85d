"""Each stage, and stages composed, under asyncio and trio."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest

from pipeline.compose import open_pipeline
from pipeline.encode import encode_sse
from pipeline.events import Done, Error, Event, Keepalive, Reasoning, Status, Text, Usage
from pipeline.filter import filter_letta
from pipeline.halt import Halt
from pipeline.keepalive import keepalive
from pipeline.letta_turn import letta_source
from pipeline.source import read_source
from pipeline.sse import decode_events
from pipeline.streams import Receive, Send
from pipeline.throttle import throttle

from . import letta_chunks as c
from .fakes import FakeStream, FakeTurn, endless

pytestmark = pytest.mark.anyio


async def collect(recv: Receive) -> list[Any]:
    return [item async for item in recv]


def task_names() -> set[str]:
    return {task.name for task in anyio.get_running_tasks()}


async def test_source_sends_everything_and_closes() -> None:
    stream = FakeStream([1, 2, 3])
    async with open_pipeline(partial(read_source, stream)) as recv:
        assert await collect(recv) == [1, 2, 3]
    assert stream.closed


async def test_source_turns_an_upstream_failure_into_a_last_item() -> None:
    stream = FakeStream([1], fail_with=ConnectionError("gone"))
    source = partial(read_source, stream, on_error=lambda exc: f"failed: {exc}")
    async with open_pipeline(source) as recv:
        assert await collect(recv) == [1, "failed: gone"]
    assert stream.closed


async def test_source_without_error_mapping_fails_the_pipeline() -> None:
    stream = FakeStream([], fail_with=ConnectionError("gone"))
    with pytest.raises(ExceptionGroup) as info:
        async with open_pipeline(partial(read_source, stream)) as recv:
            await collect(recv)
    assert info.group_contains(ConnectionError)
    assert stream.closed


async def test_consumer_leaving_early_cancels_every_stage_and_closes_the_source() -> None:
    before = task_names()
    stream = endless(c.assistant("x"))
    async with open_pipeline(partial(read_source, stream), filter_letta, throttle, keepalive, encode_sse) as recv:
        await recv.receive()
    assert stream.closed
    assert task_names() == before


async def test_cancelling_the_consumer_cancels_the_pipeline() -> None:
    before = task_names()
    stream = endless(c.assistant("x"))
    with anyio.CancelScope() as scope:
        async with open_pipeline(partial(read_source, stream), filter_letta, throttle, encode_sse) as recv:
            await recv.receive()
            scope.cancel()
            await recv.receive()
            pytest.fail("cancellation did not reach the consumer")
    assert scope.cancelled_caught
    assert stream.closed
    assert task_names() == before


async def test_a_failing_stage_cancels_the_others_and_closes_the_source() -> None:
    stream = endless(1)

    async def broken(recv: Receive, send: Send) -> None:
        with send, recv:
            await recv.receive()
            raise RuntimeError("stage bug")

    with pytest.raises(ExceptionGroup) as info:
        async with open_pipeline(partial(read_source, stream), broken, keepalive) as recv:
            await collect(recv)
    assert info.group_contains(RuntimeError)
    assert stream.closed


@pytest.mark.parametrize("buffer", [0, 1, 2])
async def test_a_consumer_that_never_reads_stops_the_source(buffer: int) -> None:
    stream = endless(Status("tick"))
    stages = [keepalive, encode_sse]
    with anyio.fail_after(10):
        async with open_pipeline(partial(read_source, stream), *stages, buffer=buffer):
            await anyio.wait_all_tasks_blocked()
            pulled = stream.pulled
            await anyio.wait_all_tasks_blocked()
            assert stream.pulled == pulled
    # each link holds `buffer` items and each stage one in hand, the source one more
    assert pulled <= (len(stages) + 1) * (buffer + 1) + 1


async def test_throttle_bounds_what_it_holds_for_a_consumer_that_never_reads() -> None:
    stream = endless(Text("abcd"))
    stage = partial(throttle, max_chars=8, max_backlog=4, max_buffered_chars=64)
    with anyio.fail_after(10):  # an unbounded throttle never blocks: this would hang
        async with open_pipeline(partial(read_source, stream), stage):
            await anyio.wait_all_tasks_blocked()
            assert stream.pulled * 4 <= 64 + 8 * 2 + 4 * 2


async def test_throttle_merges_for_a_slow_consumer_without_losing_or_reordering() -> None:
    sent: list[Event] = []
    for i in range(300):
        sent.append(Text(f"w{i} "))
        if i % 100 == 50:
            sent.append(Status(f"status {i}"))
    stream = FakeStream(sent)
    received: list[Event] = []
    async with open_pipeline(partial(read_source, stream), partial(throttle, window=0.01)) as recv:
        async for event in recv:
            received.append(event)
            await anyio.sleep(0.005)
    assert "".join(e.content for e in received if isinstance(e, Text)) == "".join(
        e.content for e in sent if isinstance(e, Text)
    )
    assert [e for e in received if isinstance(e, Status)] == [e for e in sent if isinstance(e, Status)]
    before_status = received.index(Status("status 50"))
    assert "".join(e.content for e in received[:before_status] if isinstance(e, Text)).endswith("w50 ")
    assert len(received) < len(sent) / 3


async def test_throttle_never_holds_a_status_behind_text() -> None:
    gate = anyio.Event()
    stream = FakeStream([Text("a"), Status("Using x...")])
    followup = FakeStream([Done()], gate=gate)

    async def source(send: Send) -> None:
        with send:
            async for item in stream:
                await send.send(item)
            async for item in followup:
                await send.send(item)

    with anyio.fail_after(10):  # a window of an hour: only the status can release the text
        async with open_pipeline(source, partial(throttle, window=3600)) as recv:
            assert await recv.receive() == Text("a")
            assert await recv.receive() == Status("Using x...")
            gate.set()
            assert await collect(recv) == [Done()]


@pytest.mark.parametrize("leading", [True, False])
async def test_throttle_flushes_held_text_when_input_ends(leading: bool) -> None:
    stream = FakeStream([Reasoning("a"), Reasoning("b"), Reasoning("c")])
    async with open_pipeline(partial(read_source, stream), partial(throttle, window=3600, leading=leading)) as recv:
        with anyio.fail_after(10):
            got = await collect(recv)
    assert got == ([Reasoning("a"), Reasoning("bc")] if leading else [Reasoning("abc")])


async def test_throttle_sends_the_first_delta_after_a_pause_at_once() -> None:
    gate = anyio.Event()
    later = FakeStream([Text("b"), Done()], gate=gate)

    async def source(send: Send) -> None:
        with send:
            await send.send(Text("a"))
            async for item in later:
                await send.send(item)

    with anyio.fail_after(10):  # a window of an hour: trailing-only would hold "a" until the gate opens
        async with open_pipeline(source, partial(throttle, window=3600)) as recv:
            assert await recv.receive() == Text("a")
            gate.set()
            assert await collect(recv) == [Text("b"), Done()]


async def test_keepalive_speaks_when_upstream_is_idle() -> None:
    gate = anyio.Event()
    stream = FakeStream([Text("late")], gate=gate)
    async with open_pipeline(partial(read_source, stream), partial(keepalive, interval=0.01)) as recv:
        assert await recv.receive() == Keepalive()
        gate.set()
        rest = await collect(recv)
    assert rest[-1] == Text("late")
    assert set(rest[:-1]) <= {Keepalive()}


async def test_keepalive_is_silent_while_events_flow() -> None:
    items = [Text(str(i)) for i in range(50)]
    async with open_pipeline(partial(read_source, FakeStream(items)), partial(keepalive, interval=3600)) as recv:
        assert await collect(recv) == items


async def test_letta_turn_read_to_the_end_is_closed_but_not_cancelled() -> None:
    turn = FakeTurn(FakeStream(c.answer_turn(["Hi"])))
    async with open_pipeline(partial(letta_source, turn), filter_letta) as recv:  # type: ignore[arg-type]
        events = await collect(recv)
    assert events[-1] == Done("end_turn", Usage(10, 5, 15, 1), "run-1")
    assert turn.closed
    assert not turn.cancelled


async def test_a_letta_turn_not_read_to_its_end_is_cancelled_on_the_server() -> None:
    turn = FakeTurn(endless(c.assistant("x")))
    async with open_pipeline(partial(letta_source, turn), filter_letta) as recv:  # type: ignore[arg-type]
        await recv.receive()
    assert turn.closed
    assert turn.cancelled
    assert turn.run_id == "run-1"


async def test_upstream_failure_mid_stream_ends_with_an_error_event() -> None:
    import httpx

    turn = FakeTurn(FakeStream([c.assistant("par")], fail_with=httpx.ReadError("reset")))
    async with open_pipeline(partial(letta_source, turn), filter_letta) as recv:  # type: ignore[arg-type]
        events = await collect(recv)
    assert events[0] == Text("par")
    assert isinstance(events[-1], Error)
    assert events[-1].code == "upstream_failed"
    assert turn.cancelled


async def test_whole_chain_produces_sse_that_decodes_to_the_turn() -> None:
    words = [f" w{i}" for i in range(40)]
    turn = FakeTurn(FakeStream(c.answer_turn(words)))
    stages = (filter_letta, partial(throttle, window=3600), keepalive, encode_sse)
    async with open_pipeline(partial(letta_source, turn), *stages) as recv:  # type: ignore[arg-type]
        frames = await collect(recv)
    events = list(decode_events(frames))
    assert events == [
        Status("Thinking..."),
        Reasoning("Let me think."),
        Text("".join(words)),
        Done("end_turn", Usage(10, 5, 15, 1), "run-1"),
    ]
    assert frames[0].startswith(b"retry: ")


async def test_a_stalled_consumer_ends_the_pipeline_and_closes_the_source() -> None:
    from pipeline.errors import ConsumerStalled

    stream = endless(Status("tick"))

    async def read_one_then_stall() -> None:
        async with open_pipeline(partial(read_source, stream), partial(encode_sse, send_timeout=0.05)) as recv:
            await recv.receive()
            await anyio.sleep_forever()  # the client stops reading

    with anyio.fail_after(10), pytest.raises(ExceptionGroup) as info:
        await read_one_then_stall()
    assert info.group_contains(ConsumerStalled)
    assert stream.closed


async def test_a_consumer_that_keeps_reading_is_never_stalled() -> None:
    items = [Text(str(i)) for i in range(30)]
    async with open_pipeline(partial(read_source, FakeStream(items)), partial(encode_sse, send_timeout=3600)) as recv:
        assert len(await collect(recv)) == 30


async def test_tap_sees_every_event_in_order_and_passes_it_on() -> None:
    from pipeline.tap import tap

    seen: list[Any] = []
    items = [Status("a"), Text("b"), Done()]
    async with open_pipeline(partial(read_source, FakeStream(items)), partial(tap, observe=seen.append)) as recv:
        assert await collect(recv) == items
    assert seen == items


async def test_a_halt_ends_reading_with_a_last_item_and_closes_the_source() -> None:
    gate = anyio.Event()  # the source stays idle: only `halt` can end it
    stream = FakeStream([Text("never")], gate=gate)
    halt = Halt()
    source = partial(read_source, stream, halt=halt, on_halt=lambda: Error("bye", "shutting_down"))
    with anyio.fail_after(10):
        async with open_pipeline(source) as recv:
            halt.set()
            assert await collect(recv) == [Error("bye", "shutting_down")]
    assert stream.closed


async def test_a_halt_never_set_changes_nothing() -> None:
    items = [Text("a"), Text("b")]
    async with open_pipeline(partial(read_source, FakeStream(items), halt=Halt())) as recv:
        assert await collect(recv) == items


async def test_a_halted_letta_turn_ends_with_shutting_down_and_its_run_is_cancelled() -> None:
    from pipeline.letta_turn import SHUTTING_DOWN

    turn = FakeTurn(FakeStream([c.assistant("x")], gate=anyio.Event()))
    halt = Halt()
    halt.set()
    async with open_pipeline(partial(letta_source, turn, halt=halt), filter_letta) as recv:  # type: ignore[arg-type]
        events = await collect(recv)
    assert events == [SHUTTING_DOWN]
    assert turn.cancelled
    assert turn.closed
