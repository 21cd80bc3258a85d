"""The throttle stage: fewer, larger text frames, without holding anything else back.

Two tasks share one :class:`~pipeline.coalesce.Coalescer`: a reader that keeps
pulling from upstream while the writer is blocked on a slow consumer (so text keeps
merging instead of stalling the source), and a writer that sends what is due.  The
reader stops pulling only when the coalescer is full, which bounds memory and
passes backpressure upstream.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.lowlevel

from .coalesce import Coalescer
from .flag import Flag
from .streams import Feed, Receive, Send
from .timing import Wakeup, clock


async def throttle(
    recv: Receive,
    send: Send,
    *,
    window: float = 0.05,
    max_chars: int = 4096,
    max_backlog: int = 32,
    max_buffered_chars: int = 65536,
    leading: bool = True,
) -> None:
    """Coalesce text and reasoning deltas: at most one text frame per ``window`` seconds (see
    :class:`~pipeline.coalesce.Coalescer`; ``leading``: the first delta after a pause at once), or ``max_chars``.

    Closes both streams; all held text is sent before ``send`` closes.
    """
    coalescer = Coalescer(window, max_chars, max_backlog, max_buffered_chars, leading)
    to_writer, to_reader = Wakeup(), Wakeup()
    now = clock()
    reading = True

    async def reader() -> None:
        nonlocal reading
        try:
            async for event in recv:
                coalescer.push(event, now())
                to_writer.set()
                while coalescer.full:
                    await to_reader.wait()
        finally:
            reading = False
            to_writer.set()

    async def writer() -> None:
        while True:
            batch = coalescer.take(now()) if reading else coalescer.flush()
            if batch:
                to_reader.set()
                for event in batch:
                    await send.send(event)
                continue
            if not reading:
                return
            deadline = coalescer.deadline
            await to_writer.wait(math.inf if deadline is None else deadline - now())

    with send, recv:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await writer()
            tg.cancel_scope.cancel()


class Throttle:
    """The throttle as an asynchronous boundary of :func:`~pipeline.compose.open_flow`.

    The same coalescing as :func:`throttle`, with its reader fused away: the stage before
    it (the source) pushes straight into the :class:`Coalescer` (through the pure steps
    between them, e.g. the Letta mapping), waiting only while the coalescer is full
    (backpressure), and waking the writer only when something is due sooner than it was
    going to wake anyway.  The writer is the boundary's one task (:meth:`open`) or, into a
    :class:`ReadySink` on asyncio, no task at all (:meth:`open_inline`, :class:`InlineWriter`).
    """

    def __init__(
        self,
        window: float = 0.05,
        max_chars: int = 4096,
        max_backlog: int = 32,
        max_buffered_chars: int = 65536,
        leading: bool = True,
    ) -> None:
        self.window = window
        self.max_chars = max_chars
        self.max_backlog = max_backlog
        self.max_buffered_chars = max_buffered_chars
        self.leading = leading

    def open(self, step: Feed | None) -> tuple[CoalescingSend, Callable[[Send], Awaitable[None]]]:
        """The send end its upstream writes to, and the writer to run as a task (sending to ``send``)."""
        link = self._link(step)
        return link, link.write

    def open_inline(self, step: Feed | None, sink: ReadySink) -> tuple[CoalescingSend, InlineWriter]:
        """The send end its upstream writes to, and a writer into ``sink`` that needs no task (asyncio only)."""
        link = self._link(step)
        return link, InlineWriter(link, sink)

    def _link(self, step: Feed | None) -> CoalescingSend:
        coalescer = Coalescer(self.window, self.max_chars, self.max_backlog, self.max_buffered_chars, self.leading)
        return CoalescingSend(coalescer, step)


class CoalescingSend:
    """A link whose buffer is a :class:`Coalescer`: ``send`` pushes, :meth:`write` sends what is due.

    When nothing is held or being sent and the next link takes an event at once, an event
    that would be due at once anyway (anything but text; text that opens a frame — the
    first delta after a pause, or any with a zero window) is handed straight to it: no
    wake-up of the writer, no delay.
    """

    def __init__(self, coalescer: Coalescer, step: Feed | None) -> None:
        self._coalescer = coalescer
        self._step = step
        self._to_writer, self._to_sender = Wakeup(), Wakeup()
        self._wake: _WriterWake = self._to_writer  # what wakes the writer: the task's wake-up, or an InlineWriter
        self._now = clock()
        self._open = True
        self._gone = False  # the writer stopped: nobody takes anything any more
        self._out: Send | ReadySink | None = None  # the writer's send end, while it is waiting (holding nothing)

    def _push(self, event: object) -> None:
        coalescer = self._coalescer
        out = self._out
        now = self._now()
        if out is not None and coalescer.passes(event, now):  # type: ignore[arg-type]
            try:
                out.send_nowait(event)
            except anyio.WouldBlock:
                pass
            else:
                coalescer.passed(event, now)  # type: ignore[arg-type]
                return
        idle = coalescer.empty
        coalescer.push(event, now)  # type: ignore[arg-type]
        if coalescer.has_ready:  # something is due now: the writer must know
            self._wake.set()
        elif idle:  # a new window began: the writer wakes when it ends (not now, only to learn when)
            deadline = coalescer.deadline
            if deadline is None:
                self._wake.set()
            else:
                self._wake.set_at(deadline)

    def send_nowait(self, item: object) -> None:
        if self._gone:
            raise anyio.BrokenResourceError
        if not self._open:
            raise anyio.ClosedResourceError
        if self._coalescer.full:
            raise anyio.WouldBlock
        for event in self._step.feed(item) if self._step is not None else (item,):
            self._push(event)

    async def send(self, item: object) -> None:
        try:
            if self._gone:
                raise anyio.BrokenResourceError
            if not self._open:
                raise anyio.ClosedResourceError
            for event in self._step.feed(item) if self._step is not None else (item,):
                self._push(event)
            while self._coalescer.full and not self._gone:
                await self._to_sender.wait()
            if self._gone:
                raise anyio.BrokenResourceError
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled flow ends by its cancellation, not this
            raise

    def close(self) -> None:
        if not self._open:
            return
        self._out = None  # what the step releases at the end goes through the writer: closing never raises
        if self._step is not None and not self._gone:
            for event in self._step.finish():
                self._push(event)
        self._open = False
        self._wake.set()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> CoalescingSend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def write(self, send: Send) -> None:
        """Send what is due, when it is due, until the upstream closed and all is sent.  Closes ``send``."""
        coalescer = self._coalescer
        try:
            with send:
                while True:
                    batch = self._due()
                    if batch:
                        for event in batch:
                            await send.send(event)
                        continue
                    if not self._open:
                        return
                    deadline = coalescer.deadline
                    self._out = send  # waiting, holding nothing in hand: the sender may hand over directly
                    try:
                        await self._to_writer.wait(math.inf if deadline is None else deadline - self._now())
                    finally:
                        self._out = None
        finally:
            self._writer_gone()

    # the writer's side, shared by :meth:`write` and :class:`InlineWriter`

    def _due(self) -> list[Any]:
        """What the writer sends now (everything once the upstream closed); a sender held by a full coalescer
        may go on."""
        batch = self._coalescer.take(self._now()) if self._open else self._coalescer.flush()
        if batch:
            self._to_sender.set()
        return batch

    def _writer_gone(self) -> None:
        """The writer stopped: nobody takes anything any more, and a waiting sender learns it.

        An :class:`InlineWriter` standing in for the wake-up is let go, so the link and the
        writer (which refer to each other) are freed by reference counting, not left to the collector.
        """
        self._gone = True
        self._out = None
        self._wake = self._to_writer
        self._to_sender.set()


class _WriterWake(Protocol):
    """How the link wakes its writer: now, or at a time of :func:`~pipeline.timing.clock`."""

    def set(self) -> None: ...

    def set_at(self, when: float) -> None: ...


@runtime_checkable
class ReadySink(Protocol):
    """A sink that says when it can take an item: what lets a writer do without a task."""

    def send_nowait(self, item: Any) -> None: ...

    def call_when_ready(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (once) when ``send_nowait`` would take an item or fail for good; now, if it would now."""
        ...


class InlineWriter:
    """:meth:`CoalescingSend.write` without a task, on asyncio: loop callbacks run it when there is work.

    It stands in for the link's writer wake-up: an event due now schedules one run of the
    writing loop (``call_soon``), a window's end arms one loop timer, and a sink that
    declines an item calls it back when it can take one (``call_when_ready``).  So a
    throttled stream costs no task, no coroutine and no cancel scope for its writer.

    Contract: the owner (:func:`pipeline.compose.run_flow`) awaits :meth:`finished` once the
    upstream closed the link; :meth:`close` (always, when the flow ends) disarms the timer
    and makes every later callback a no-op.  An exception from the sink ends the writer:
    it is kept in :attr:`error`, the link's sends raise :class:`anyio.BrokenResourceError`
    and ``on_error`` is called (the owner cancels the flow with it).
    """

    def __init__(self, link: CoalescingSend, sink: ReadySink) -> None:
        self._link = link
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._pending: list[Any] = []  # taken from the coalescer, not yet taken by the sink
        self._next = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._done = Flag()
        self.error: BaseException | None = None
        self.on_error: Callable[[], object] | None = None
        link._wake = self  # the link wakes this instead of a task

    # the link's wake-up interface (what Wakeup offers the task writer)
    def set(self) -> None:
        if not self._scheduled and not self._done.is_set():
            self._scheduled = True
            self._loop.call_soon(self._run)

    def set_at(self, when: float) -> None:
        if when >= self._timer_at or self._done.is_set():
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self._run()

    def _run(self) -> None:
        self._scheduled = False
        if self._done.is_set():
            return
        link, sink = self._link, self._sink
        link._out = None
        try:
            while True:
                pending = self._pending
                while self._next < len(pending):
                    try:
                        sink.send_nowait(pending[self._next])
                    except anyio.WouldBlock:
                        sink.call_when_ready(self.set)
                        return
                    self._next += 1
                batch = link._due()
                if batch:
                    self._pending, self._next = batch, 0
                    continue
                self._pending, self._next = [], 0
                if not link._open:
                    self._end()
                    return
                deadline = link._coalescer.deadline
                if deadline is not None:
                    self.set_at(deadline)
                link._out = sink  # holding nothing: the sender may hand over directly
                return
        except Exception as exc:
            self.error = exc
            self._end()
            if self.on_error is not None:
                self.on_error()

    def _end(self) -> None:
        self._done.set()
        self._link._writer_gone()

    async def finished(self) -> None:
        """Return once everything the closed link held went to the sink (or the writer failed)."""
        await self._done.wait()

    def close(self) -> None:
        """The flow ended: no more runs, no timer.  Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        if not self._done.is_set():
            self._end()
