"""run_flow: a flow driven into a sink, its last task being the caller's — order, no loss, where each
item is handled, errors and cancellation, under asyncio and trio."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from pipeline.compose import run_flow
from pipeline.events import Done, Text
from pipeline.halt import Halt
from pipeline.keepalive import IdleKeepalive
from pipeline.source import read_source
from pipeline.streams import Receive, Send
from pipeline.throttle import CoalescingSend, InlineWriter, Throttle
from tests.collector import alive, collector_held

from .fakes import FakeStream, endless

pytestmark = pytest.mark.anyio


class Sink:
    """Records what it is sent, from which task, and how (``nowait``: whether it takes items at once)."""

    def __init__(self, *, nowait: bool) -> None:
        self.nowait = nowait
        self.items: list[Any] = []
        self.tasks: list[tuple[str, Any]] = []
        self.closed = False

    def send_nowait(self, item: Any) -> None:
        if not self.nowait:
            raise anyio.WouldBlock
        self.items.append(item)
        self.tasks.append(("nowait", anyio.get_current_task().id))

    async def send(self, item: Any) -> None:
        await anyio.lowlevel.checkpoint()
        self.items.append(item)
        self.tasks.append(("send", anyio.get_current_task().id))

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def relay(recv: Receive, send: Send) -> None:
    with send, recv:
        async for item in recv:
            await send.send(item)


class Upper:
    def feed(self, item: Any) -> list[Any]:
        return [item.upper()]

    def finish(self) -> list[Any]:
        return []


async def test_a_stage_last_writes_every_item_in_order_from_the_callers_task() -> None:
    sink = Sink(nowait=True)
    await run_flow(partial(read_source, FakeStream(["a", "b", "c"])), Upper(), relay, sink=sink)
    assert sink.items == ["A", "B", "C"]
    me = anyio.get_current_task().id
    assert {task for _, task in sink.tasks} == {me}  # the last stage ran here, not in a task of its own
    assert sink.closed


@pytest.mark.parametrize("nowait", [True, False])
async def test_a_throttle_last_loses_nothing_whether_or_not_the_sink_takes_items_at_once(nowait: bool) -> None:
    events = [Text(f"w{i} ") for i in range(50)] + [Done()]
    sink = Sink(nowait=nowait)
    await run_flow(partial(read_source, FakeStream(events)), Throttle(0.0), sink=sink)
    assert "".join(e.content for e in sink.items if isinstance(e, Text)) == "".join(e.content for e in events[:-1])
    assert isinstance(sink.items[-1], Done)
    assert sink.closed
    if not nowait:
        assert {how for how, _ in sink.tasks} == {"send"}


async def test_an_event_due_at_once_goes_to_a_ready_sink_from_the_sources_task() -> None:
    async def slow_source(send: Send) -> None:
        with send:
            for event in (Text("hi"), Done()):
                await anyio.sleep(0.05)  # the writer is waiting, holding nothing
                await send.send(event)

    sink = Sink(nowait=True)
    await run_flow(slow_source, Throttle(0.05), sink=sink)
    assert [type(e) for e in sink.items] == [Text, Done]
    me = anyio.get_current_task().id
    assert all(how == "nowait" and task != me for how, task in sink.tasks)


async def test_a_failing_sink_cancels_the_source_and_raises() -> None:
    stream = endless("a")

    class Failing(Sink):
        async def send(self, item: Any) -> None:
            raise RuntimeError("sink broke")

    with pytest.raises(BaseExceptionGroup) as caught:
        await run_flow(partial(read_source, stream), relay, sink=Failing(nowait=False))
    assert caught.group_contains(RuntimeError, match="sink broke")
    assert stream.closed


async def test_cancelling_the_caller_cancels_every_part_and_closes_the_sink() -> None:
    stream = endless("a")
    sink = Sink(nowait=False)
    with anyio.move_on_after(0.2):
        await run_flow(partial(read_source, stream), relay, sink=sink)
    assert stream.closed
    assert sink.closed
    assert sink.items


async def test_what_has_no_task_to_run_in_is_refused() -> None:
    with pytest.raises(ValueError, match="fuse it into the sink"):
        await run_flow(partial(read_source, FakeStream(["a"])), relay, Upper(), sink=Sink(nowait=True))
    with pytest.raises(ValueError, match="keepalive"):
        await run_flow(partial(read_source, FakeStream(["a"])), IdleKeepalive(1.0), sink=Sink(nowait=True))


async def test_a_halt_set_by_the_sink_ends_the_flow_and_returns_normally() -> None:
    stream = endless("a")
    halt = Halt()

    class Last(Sink):
        async def send(self, item: Any) -> None:
            await super().send(item)
            if len(self.items) == 3:
                halt.set()  # e.g. the terminal item: nothing after it is read

    sink = Last(nowait=False)
    with anyio.fail_after(5):  # not a timing goal: a flow the halt failed to end would never return
        await run_flow(partial(read_source, stream), relay, sink=sink, halt=halt)
    assert sink.items == ["a", "a", "a"]
    assert stream.closed
    assert sink.closed
    assert halt.watchers == 0  # the flow's scope is forgotten once it ended


async def test_a_halt_set_before_the_flow_starts_ends_it_at_once() -> None:
    stream = endless("a")
    halt = Halt()
    halt.set()
    sink = Sink(nowait=False)
    await run_flow(partial(read_source, stream), relay, sink=sink, halt=halt)
    assert sink.items == []
    assert stream.closed
    assert sink.closed


class ReadySink(Sink):
    """A sink that says when it is ready (``call_when_ready``): on asyncio the throttle's writer then runs
    without a task.  ``capacity`` items are taken at once; ``release()`` makes room and calls back."""

    def __init__(self, capacity: float = float("inf")) -> None:
        super().__init__(nowait=True)
        self.capacity = capacity
        self.callbacks: list[Any] = []
        self.fail_on: Any = None

    def send_nowait(self, item: Any) -> None:
        if item == self.fail_on:
            raise RuntimeError("sink broke")
        if len(self.items) >= self.capacity:
            raise anyio.WouldBlock
        self.items.append(item)

    def call_when_ready(self, callback: Any) -> None:
        if len(self.items) < self.capacity:
            callback()
        else:
            self.callbacks.append(callback)

    def release(self, more: int) -> None:
        self.capacity += more
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def flow_tasks() -> int:
    """Tasks of this event loop now (asyncio), or -1 (trio: not counted)."""
    import sniffio

    if sniffio.current_async_library() != "asyncio":
        return -1
    import asyncio

    return len(asyncio.all_tasks())


async def test_a_ready_sink_gets_every_event_in_order_and_the_writer_needs_no_task() -> None:
    events = [Text("a"), Text("b"), Text("c"), Done()]
    sink = ReadySink()
    before = flow_tasks()
    seen_tasks: list[int] = []

    async def source(send: Send) -> None:
        with send:
            for event in events:
                seen_tasks.append(flow_tasks())
                await anyio.sleep(0.01)
                await send.send(event)

    await run_flow(source, Throttle(0.05), sink=sink)
    assert "".join(e.content for e in sink.items if isinstance(e, Text)) == "abc"
    assert isinstance(sink.items[-1], Done)
    assert sink.closed
    if before >= 0:  # asyncio: the source ran in the caller's task, and nothing else was started
        assert seen_tasks == [before] * len(events)


async def test_a_ready_sink_that_declines_holds_the_writer_and_text_merges_meanwhile() -> None:
    sink = ReadySink(capacity=1)
    stop_after = 40

    async def source(send: Send) -> None:
        with send:
            for i in range(stop_after):
                await send.send(Text(str(i % 10)))
                await anyio.sleep(0.001)
            await send.send(Done())

    async def release_later() -> None:
        await anyio.sleep(0.1)
        sink.release(1000)

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_later)
        with anyio.fail_after(5):  # not a timing goal: a writer never called back would hang here
            await run_flow(source, Throttle(0.02), sink=sink)
    text = "".join(e.content for e in sink.items if isinstance(e, Text))
    assert text == "".join(str(i % 10) for i in range(stop_after))  # nothing lost, nothing reordered
    assert isinstance(sink.items[-1], Done)
    assert len(sink.items) < stop_after  # merged while the sink declined


async def test_a_ready_sink_that_fails_ends_the_flow_with_its_error_and_closes_the_source() -> None:
    stream = endless("a")
    sink = ReadySink()
    sink.fail_on = "a"
    with pytest.raises(BaseExceptionGroup) as caught, anyio.fail_after(5):
        await run_flow(partial(read_source, stream), Throttle(0.0), sink=sink)
    assert caught.group_contains(RuntimeError, match="sink broke")
    assert stream.closed
    assert sink.closed


async def test_cancelling_a_flow_into_a_ready_sink_closes_all_and_leaves_no_callback_behind() -> None:
    stream = endless("a")
    sink = ReadySink(capacity=3)
    with anyio.move_on_after(0.2):
        await run_flow(partial(read_source, stream), Throttle(0.01), sink=sink)
    assert stream.closed
    assert sink.closed
    taken = list(sink.items)
    sink.release(100)  # a writer waiting on the sink is called back after its flow ended: it must do nothing
    await anyio.sleep(0.05)  # and no window timer fires into the sink either
    assert sink.items == taken


async def test_a_halt_ends_a_flow_into_a_ready_sink_normally() -> None:
    stream = endless("a")
    halt = Halt()
    sink = ReadySink()

    async def set_later() -> None:
        await anyio.sleep(0.05)
        halt.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(set_later)
        with anyio.fail_after(5):
            await run_flow(partial(read_source, stream), Throttle(0.01), sink=sink, halt=halt)
    assert stream.closed
    assert sink.closed
    assert halt.watchers == 0


async def test_a_finished_flow_leaves_nothing_for_the_garbage_collector() -> None:
    """The throttle's link and its writer (on asyncio, an InlineWriter: they refer to each other while
    the flow runs) are freed by reference counting when the flow ends: a class's turns ending together
    leave no pile of cycles for one long collector pass."""
    kinds = (CoalescingSend, InlineWriter)
    with collector_held():
        assert alive(*kinds) == []
        sink = ReadySink(capacity=2)

        async def release_later() -> None:
            await anyio.sleep(0.05)
            sink.release(1000)  # the writer waited on the sink by callback meanwhile

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_later)
            await run_flow(
                partial(read_source, FakeStream([Text("a"), Text("b"), Text("c"), Done()])), Throttle(0.01), sink=sink
            )
        assert isinstance(sink.items[-1], Done)
        remaining = alive(*kinds)
    assert remaining == []
