"""open_flow: fused steps, batching links, the throttle boundary and the keepalive timer — behaviour only
(order, no loss, cancellation, backpressure), under asyncio and trio."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from pipeline.compose import Fused, fuse, is_step, open_flow
from pipeline.errors import ConsumerStalled
from pipeline.events import Done, Keepalive, Status, Text
from pipeline.keepalive import IdleKeepalive
from pipeline.letta_map import LettaMapper
from pipeline.source import read_source
from pipeline.sse import SSEEncoder, decode_events
from pipeline.streams import Receive, Send
from pipeline.tap import Observe
from pipeline.throttle import Throttle

from . import letta_chunks as c
from .fakes import FakeStream, endless

pytestmark = pytest.mark.anyio


class Double:
    """A pure step: every item twice; at the end, one marker."""

    def feed(self, item: Any) -> list[Any]:
        return [item, item]

    def finish(self) -> list[Any]:
        return ["end"]


class Tag:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def feed(self, item: Any) -> list[Any]:
        return [f"{item}{self.tag}"]

    def finish(self) -> list[Any]:
        return [f"fin{self.tag}"]


def source_of(stream: FakeStream) -> Any:
    return partial(read_source, stream)


async def relay(recv: Receive, send: Send) -> None:
    """A plain stage (its own task)."""
    with send, recv:
        async for item in recv:
            await send.send(item)


async def drain(out: Any) -> list[Any]:
    return [item async for item in out]


def test_fuse_runs_steps_in_order_and_carries_what_a_step_releases_at_the_end_through_the_later_ones() -> None:
    fused = fuse(Double(), Tag("!"))
    assert fused.feed("a") == ["a!", "a!"]
    assert fused.finish() == ["end!", "fin!"]  # Double's "end" still goes through Tag
    assert fuse(Double()).feed("x") == ["x", "x"]  # one step is itself
    nested = fuse(fuse(Tag("1"), Tag("2")), Tag("3"))
    assert isinstance(nested, Fused)
    assert len(nested.steps) == 3
    assert nested.feed("a") == ["a123"]


def test_steps_and_stages_are_told_apart() -> None:
    assert is_step(LettaMapper())
    assert is_step(SSEEncoder())
    assert is_step(Observe(print))
    assert is_step(Double())
    assert not is_step(relay)
    assert not is_step(partial(relay))


async def test_steps_are_fused_into_tasks_in_order_with_no_loss() -> None:
    stream = FakeStream(range(200))
    async with open_flow(source_of(stream), Tag("a"), relay, Tag("b"), relay, Tag("c"), batch=8) as out:
        got = await drain(out)
    assert got == [f"{i}abc" for i in range(200)] + ["finabc", "finbc", "finc"]
    assert stream.closed


async def test_only_stages_get_tasks() -> None:
    seen: list[int] = []

    async def counting_source(send: Send) -> None:
        with send:
            for i in range(3):
                seen.append(len(anyio.get_running_tasks()))
                await send.send(i)

    async with open_flow(counting_source, Tag("a"), Tag("b"), Tag("c")) as out:
        assert await drain(out) == ["0abc", "1abc", "2abc", "finabc", "finbc", "finc"]
    async with open_flow(counting_source, relay, Tag("a"), relay) as out:
        await drain(out)
    assert seen[3] == seen[0] + 2  # two stages: two more tasks; the three steps none


async def test_a_consumer_that_is_behind_gets_what_is_ready_as_one_batch() -> None:
    async with open_flow(source_of(FakeStream(range(100))), relay, batch=16) as out:
        await anyio.sleep(0.05)  # fall behind
        first = await out.receive_ready()
        rest: list[int] = []
        while True:
            try:
                rest += await out.receive_ready()
            except anyio.EndOfStream:
                break
    assert 1 < len(first) <= 2 * 16  # at most a batch taken and one waiting
    assert first + rest == list(range(100))


@pytest.mark.parametrize("batch", [1, 16])
async def test_a_consumer_that_never_reads_stops_the_source(batch: int) -> None:
    stream = endless("x")
    async with open_flow(source_of(stream), relay, relay, batch=batch):
        await anyio.sleep(0.2)
        pulled = stream.pulled
        await anyio.sleep(0.2)
        assert stream.pulled == pulled  # backpressure: the source waits
    assert pulled <= 3 * 2 * batch + 3  # per link: a batch taken and one waiting; one item per task in hand
    assert stream.closed


async def test_leaving_early_cancels_every_task_and_closes_the_source() -> None:
    stream = endless("x")
    async with open_flow(source_of(stream), relay, Tag("!"), Throttle(0.01), relay) as out:
        assert await out.receive() == "x!"
    assert stream.closed


async def test_cancelling_the_consumer_cancels_the_flow() -> None:
    stream = endless("x")
    with anyio.move_on_after(0.1):
        async with open_flow(source_of(stream), relay, batch=4) as out:
            async for _ in out:
                await anyio.sleep(0.01)
    assert stream.closed


async def test_a_failing_step_ends_the_flow_and_closes_the_source() -> None:
    class Boom:
        def feed(self, item: Any) -> list[Any]:
            if item == 5:
                raise ValueError("boom")
            return [item]

        def finish(self) -> list[Any]:
            return []

    stream = FakeStream(range(100))
    with pytest.raises(ExceptionGroup) as caught:
        async with open_flow(source_of(stream), relay, Boom(), relay) as out:
            await drain(out)
    assert caught.group_contains(ValueError, match="boom")
    assert stream.closed


@pytest.mark.parametrize("window", [0.0, 0.01])
@pytest.mark.parametrize("pause", [0.0, 0.001])
async def test_throttle_boundary_keeps_order_and_loses_nothing(window: float, pause: float) -> None:
    items = [Text(f"{i};") if i % 10 else Status(f"s{i}") for i in range(300)]
    async with open_flow(source_of(FakeStream(items)), Throttle(window), relay) as out:
        got = []
        async for event in out:
            got.append(event)
            await anyio.sleep(pause)
    statuses = [e for e in got if isinstance(e, Status)]
    assert statuses == [e for e in items if isinstance(e, Status)]
    text = "".join(e.content for e in got if isinstance(e, Text))
    assert text == "".join(e.content for e in items if isinstance(e, Text))
    if pause:
        assert len(got) < len(items)  # text merged for a slow consumer


@pytest.mark.parametrize("leading", [True, False])
async def test_throttle_boundary_never_holds_a_status_behind_text(leading: bool) -> None:
    gate = anyio.Event()
    stream = FakeStream([Text("a"), Text("b"), Status("Using x..."), Text("c")], gate=None)

    async def slow_source(send: Send) -> None:
        with send:
            async for item in stream:
                await send.send(item)
                if isinstance(item, Status):
                    await gate.wait()  # the status is out before anything else arrives

    async with open_flow(slow_source, Throttle(60.0, leading=leading)) as out:
        with anyio.fail_after(5):
            first = [Text("a"), Text("b")] if leading else [Text("ab")]  # "a" opened a frame at once
            assert [await out.receive() for _ in first] == first
            assert await out.receive() == Status("Using x...")
        gate.set()
        assert await drain(out) == [Text("c")]


async def test_throttle_boundary_sends_the_first_delta_after_a_pause_at_once() -> None:
    gate = anyio.Event()
    later = FakeStream([Text("c"), Done()], gate=gate)

    async def source(send: Send) -> None:
        with send:
            await send.send(Text("a"))
            await send.send(Text("b"))
            async for item in later:
                await send.send(item)

    with anyio.fail_after(5):  # a window of an hour: only the leading edge can let "a" out before the gate
        async with open_flow(source, Throttle(3600.0), relay) as out:
            assert await out.receive() == Text("a")
            gate.set()  # the end of the turn releases the held text at once, then ends
            assert await drain(out) == [Text("bc"), Done()]


async def test_throttle_boundary_bounds_what_it_holds_and_passes_backpressure_up() -> None:
    stream = endless(Status("s"))
    async with open_flow(source_of(stream), Throttle(0.05), relay, batch=4):
        await anyio.sleep(0.2)
        pulled = stream.pulled
        await anyio.sleep(0.2)
        assert stream.pulled == pulled
    assert pulled <= 32 + 3 * 2 * 4 + 3  # the coalescer's backlog, then the links


async def test_the_mapper_fused_before_the_throttle_still_ends_the_turn() -> None:
    chunks = c.answer_turn(["Hel", "lo"])
    async with open_flow(source_of(FakeStream(chunks)), LettaMapper(), Throttle(0.0)) as out:
        got = await drain(out)
    assert "".join(e.content for e in got if isinstance(e, Text)) == "Hello"
    assert isinstance(got[-1], Done)


async def test_idle_keepalive_speaks_in_the_readers_task_and_loses_nothing() -> None:
    gate = anyio.Event()
    stream = FakeStream([Text("a"), Text("b")], gate=gate)
    async with open_flow(source_of(stream), relay, IdleKeepalive(0.05), SSEEncoder(retry_ms=None)) as out:
        first = await out.receive()
        assert first == b": keepalive\n\n"
        gate.set()
        rest = await drain(out)
    assert list(decode_events(rest)) == [Text("a"), Text("b")]


async def test_idle_keepalive_is_silent_while_items_flow() -> None:
    items = [Text(str(i)) for i in range(50)]

    async def paced(send: Send) -> None:
        with send:
            for item in items:
                await send.send(item)
                await anyio.sleep(0.001)

    async with open_flow(paced, IdleKeepalive(1.0)) as out:
        got = await drain(out)
    assert got == items
    assert not any(isinstance(e, Keepalive) for e in got)


async def test_a_stalled_consumer_ends_the_flow_and_closes_the_source() -> None:
    stream = endless(Text("x"))
    with pytest.raises(ExceptionGroup) as caught:
        async with open_flow(source_of(stream), Throttle(0.0), SSEEncoder(), batch=4, send_timeout=0.2):
            await anyio.sleep(5)  # never reads
    assert caught.group_contains(ConsumerStalled)
    assert stream.closed


async def test_observe_sees_every_event_before_it_is_encoded() -> None:
    seen: list[Any] = []
    events = [Status("s"), Text("a"), Done("end_turn")]
    async with open_flow(source_of(FakeStream(events)), Observe(seen.append), SSEEncoder()) as out:
        frames = await drain(out)
    assert seen == events
    assert list(decode_events(frames)) == events


async def test_bytes_pass_through_the_encoder_step_unchanged() -> None:
    frame = b"id: t:1\nevent: message\ndata: {}\n\n"
    encoder = SSEEncoder()
    assert encoder.feed(frame) == (frame,)
    assert list(encoder.finish()) == []


async def test_receive_nowait_and_end_of_stream() -> None:
    async with open_flow(source_of(FakeStream([1, 2])), Double()) as out:
        with anyio.fail_after(5):
            while True:
                try:
                    first = out.receive_nowait()
                    break
                except anyio.WouldBlock:
                    await anyio.lowlevel.checkpoint()
        assert first == 1
        assert await drain(out) == [1, 2, 2, "end"]
        with pytest.raises(anyio.EndOfStream):
            await out.receive()


async def test_encode_sse_stage_passes_frames_that_are_bytes_already_unchanged() -> None:
    from pipeline.compose import open_pipeline
    from pipeline.encode import encode_sse
    from pipeline.keepalive import keepalive

    pre_encoded = b'id: turn-1:7\nevent: message\ndata: {"type":"message","content":"hi"}\n\n'
    items = [pre_encoded, Text("live"), pre_encoded]
    async with open_pipeline(source_of(FakeStream(items)), partial(keepalive, interval=15.0), encode_sse) as out:
        frames = [frame async for frame in out]
    assert frames[0] == pre_encoded
    assert frames[2] == pre_encoded
    assert list(decode_events([frames[1]])) == [Text("live")]


async def test_receive_ready_can_be_bounded_in_bytes() -> None:
    frames = [b"a" * 100 for _ in range(10)]
    async with open_flow(source_of(FakeStream(frames)), relay) as out:
        await anyio.sleep(0.05)
        got: list[list[bytes]] = []
        while True:
            try:
                got.append(await out.receive_ready(max_bytes=250))
            except anyio.EndOfStream:
                break
    assert [b for batch in got for b in batch] == frames
    assert all(len(batch) <= 2 for batch in got)
    big = [b"x" * 1000]
    async with open_flow(source_of(FakeStream(big))) as out:
        assert await out.receive_ready(max_bytes=10) == big  # one item always goes


async def test_a_cancelled_sender_meeting_a_closed_link_ends_by_its_cancellation() -> None:
    """A task woken just before its flow was cancelled may send once more into a link already closed: that
    must raise the cancellation (which the task group absorbs), not BrokenResourceError (which it would raise)."""
    from pipeline.coalesce import Coalescer
    from pipeline.streams import BatchSend
    from pipeline.throttle import CoalescingSend

    send, recv = anyio.create_memory_object_stream[Any](1)
    recv.close()
    link = BatchSend(send, 4)
    coalescing = CoalescingSend(Coalescer(), None)
    coalescing.close()
    with anyio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await link.send("x")
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await coalescing.send("x")
    with pytest.raises(anyio.BrokenResourceError):  # not cancelled: the broken link is reported as before
        await link.send("x")


async def test_closing_the_throttle_link_never_raises_even_when_its_reader_is_gone() -> None:
    from pipeline.coalesce import Coalescer
    from pipeline.throttle import CoalescingSend

    send, recv = anyio.create_memory_object_stream[Any](1)
    link = CoalescingSend(Coalescer(), LettaMapper())  # its finish() releases the turn's last event
    async with anyio.create_task_group() as tg:
        tg.start_soon(link.write, send)
        await anyio.sleep(0.01)  # the writer waits, ready to be handed events directly
        recv.close()  # the reader went away
        link.close()  # as the source's `with send:` does when it is cancelled: must not raise
        tg.cancel_scope.cancel()
