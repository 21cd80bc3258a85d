"""Wiring stages together: one task group, small buffers, one owner.

:func:`open_pipeline` starts a source and any number of stages, each linked to the
next by a memory object stream of ``buffer`` items (small, so a slow consumer slows
the source down instead of filling memory).  It yields the last stage's receive
stream to the caller, who reads it in the same task that entered the context.

:func:`open_flow` is the same with two economies, as Akka Streams fuses operators and
marks asynchronous boundaries:

- **Fused steps.**  A part that is a pure :class:`Step` (``feed(item) -> items`` and
  ``finish() -> items``, e.g. :class:`~pipeline.letta_map.LettaMapper` or
  :class:`~pipeline.sse.SSEEncoder`) gets no task and no link: it runs inside the task of
  the stage that reads its output (or the caller's, at the end).  Only stages that need
  time of their own (a source, the throttle, the keepalive) are tasks.
- **Batching links.**  A link hands over what is ready as one batch when its consumer is
  behind (:class:`~pipeline.streams.BatchSend`), bounded by ``batch`` items; the caller
  can take everything ready at once with ``receive_ready()`` (one HTTP write for many frames).

:func:`run_flow` is the same composition for a consumer that is a send end (a *sink*)
rather than a reader: no last link and no reader, and the last stage or boundary runs in
the caller's own task, writing straight into the sink.  When the flow is pure steps and one
boundary that can write on loop callbacks, into a sink that says when it is ready
(:class:`~pipeline.throttle.ReadySink`), on asyncio, it needs no task at all: the source
runs in the caller's task and the boundary's writer on loop callbacks (a timer for its
window, a call-back when the sink has room).

Leaving the context — normally, by an exception, or by cancellation (a client that
went away) — cancels every stage still running and waits for it, so each closes its
streams and the source closes what it reads.  An exception in any stage cancels the
others and the caller's block, and is raised from the ``async with``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Protocol, runtime_checkable

import anyio
import sniffio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream

from .events import Keepalive
from .halt import Halt
from .keepalive import IdleKeepalive
from .streams import BatchReceive, BatchSend, Feed, Send, Source, Stage
from .throttle import ReadySink


@asynccontextmanager
async def open_pipeline(
    source: Source, *stages: Stage, buffer: int = 1
) -> AsyncIterator[MemoryObjectReceiveStream[Any]]:
    """Run ``source`` → ``stages`` in a task group; yield the receive end of the last one."""
    async with anyio.create_task_group() as tg:
        send, recv = anyio.create_memory_object_stream[Any](buffer)
        tg.start_soon(source, send)
        for stage in stages:
            next_send, next_recv = anyio.create_memory_object_stream[Any](buffer)
            tg.start_soon(stage, recv, next_send)
            recv = next_recv
        with recv:
            try:
                yield recv
            finally:
                tg.cancel_scope.cancel()


@runtime_checkable
class Step(Protocol):
    """A pure stage: ``feed`` answers the items one item means, ``finish`` what is left at the end.

    No I/O, no waiting, no clock: it can run in any task, so :func:`open_flow` fuses it
    into a neighbour's instead of giving it one.
    """

    def feed(self, item: Any) -> Iterable[Any]: ...

    def finish(self) -> Iterable[Any]: ...


class Fused:
    """Steps run one after the other as one step (what :func:`fuse` returns)."""

    def __init__(self, steps: Iterable[Feed]) -> None:
        self.steps: tuple[Feed, ...] = tuple(steps)

    def feed(self, item: Any) -> list[Any]:
        items: Iterable[Any] = (item,)
        for step in self.steps:
            items = [out for one in items for out in step.feed(one)]
        return list(items)

    def finish(self) -> list[Any]:
        carried: list[Any] = []
        for step in self.steps:  # what an earlier step releases at the end still goes through the later ones
            carried = [out for one in carried for out in step.feed(one)]
            carried.extend(step.finish())
        return carried


def fuse(*steps: Feed) -> Feed:
    """One step doing ``steps`` in order (nested :class:`Fused` are flattened)."""
    flat: list[Feed] = []
    for step in steps:
        flat.extend(step.steps if isinstance(step, Fused) else (step,))
    return flat[0] if len(flat) == 1 else Fused(flat)


def is_step(part: object) -> bool:
    """Whether ``part`` is a pure step (fused) rather than a stage (a task)."""
    return isinstance(part, Step) and not callable(part)


@runtime_checkable
class Boundary(Protocol):
    """A part with its own buffer and task whose *input* runs in its upstream's task.

    ``open(step)`` answers the send end its upstream writes to (``step``, the pure steps
    before it, fused on that side) and the task that drains it into the next link.
    :class:`~pipeline.throttle.Throttle` is one: its coalescer is the link.
    """

    def open(self, step: Feed | None) -> tuple[Send, Callable[[Send], Awaitable[Any]]]: ...


Task = Callable[[Send], Awaitable[Any]]


def _reader(raw: MemoryObjectReceiveStream[Any], steps: list[Feed], idle: IdleKeepalive | None) -> BatchReceive:
    """The reading end of a link: ``steps`` fused into it, and ``idle``'s timer if there is one."""
    step = fuse(*steps) if steps else None
    if idle is None:
        return BatchReceive(raw, step=step)
    return BatchReceive(raw, step=step, idle=idle.interval, on_idle=Keepalive)


def _wire(
    tg: TaskGroup, source: Source, parts: tuple[Stage | Feed | Boundary | IdleKeepalive, ...], batch: int
) -> tuple[Task, list[Feed], IdleKeepalive | None]:
    """Start every task but the last in ``tg``; the last one, and the steps and keepalive after it."""
    task: Task = source
    steps: list[Feed] = []
    idle: IdleKeepalive | None = None
    for part in parts:
        if isinstance(part, IdleKeepalive):
            idle = part
        elif is_step(part):
            steps.append(part)  # type: ignore[arg-type]
        elif isinstance(part, Boundary):
            if idle is not None:
                raise ValueError("a keepalive must be read by a stage or the caller, not by a boundary")
            send_end, drain = part.open(fuse(*steps) if steps else None)
            tg.start_soon(task, send_end)  # type: ignore[arg-type]
            task, steps = drain, []
        else:
            send, raw = anyio.create_memory_object_stream[Any](1)
            tg.start_soon(task, BatchSend(send, batch))  # type: ignore[arg-type]
            stage: Stage = part  # type: ignore[assignment]
            task, steps, idle = partial(stage, _reader(raw, steps, idle)), [], None
    return task, steps, idle


@asynccontextmanager
async def open_flow(
    source: Source, *parts: Stage | Feed | Boundary | IdleKeepalive, batch: int = 64, send_timeout: float | None = None
) -> AsyncIterator[BatchReceive]:
    """Run ``source`` → ``parts`` in one task group; yield the end the caller reads.

    ``parts`` are stages (each its own task), boundaries (a task, fed from the upstream's
    task), steps (fused into the task that reads their input, or into the caller's after
    the last task) and :class:`~pipeline.keepalive.IdleKeepalive` (a timer in the reader of
    its link).  Links hold one batch of at most ``batch`` items.  With ``send_timeout``,
    a caller that takes nothing for that long ends the flow with
    :class:`~pipeline.errors.ConsumerStalled`.  The yielded end has ``receive()``,
    ``async for`` and ``receive_ready()`` (all items ready now, as a list).
    """
    async with anyio.create_task_group() as tg:
        task, steps, idle = _wire(tg, source, parts, batch)
        send, raw = anyio.create_memory_object_stream[Any](1)
        tg.start_soon(task, BatchSend(send, batch, timeout=send_timeout))  # type: ignore[arg-type]
        with _reader(raw, steps, idle) as out:
            try:
                yield out
            finally:
                tg.cancel_scope.cancel()


async def run_flow(
    source: Source, *parts: Stage | Feed | Boundary, sink: Send, batch: int = 64, halt: Halt | None = None
) -> None:
    """Run ``source`` → ``parts`` into ``sink`` until the source ends or ``halt`` is set; the last task is the caller's.

    ``parts`` as for :func:`open_flow`, but no keepalive (there is no reader) and no pure
    step after the last stage or boundary (fuse it into ``sink``).  The last stage or
    boundary writes into ``sink`` from the caller's task; a boundary may also hand an item
    to ``sink.send_nowait`` from its upstream's task (it raises :class:`anyio.WouldBlock`
    when it cannot take one at once).  ``sink`` is closed when the flow ends.  An
    exception in any part (or in ``sink``) cancels the others and is raised here; when the
    caller's scope is cancelled, every part is cancelled and waited for.  Setting ``halt``
    (also from inside ``sink``, e.g. on a last item) cancels every part the same way, and
    ``run_flow`` returns normally: the flow's own scope is the one cancelled, no scope of the caller's.
    """
    if any(isinstance(part, IdleKeepalive) for part in parts):
        raise ValueError("a keepalive needs a reader: use open_flow")
    if parts and is_step(parts[-1]):
        raise ValueError("a pure step after the last stage has no task to run in: fuse it into the sink")
    if _inline(parts, sink):
        await _run_inline(source, parts, sink, halt)  # type: ignore[arg-type]
        return
    async with anyio.create_task_group() as tg:
        if halt is not None:
            halt.add(tg.cancel_scope)
        try:
            task, _, _ = _wire(tg, source, parts, batch)
            with sink:
                await task(sink)  # returns once its input ended: the parts before it end (and clean up) on their own
        finally:
            if halt is not None:
                halt.discard(tg.cancel_scope)


def _inline(parts: tuple[Stage | Feed | Boundary, ...], sink: Send) -> bool:
    """Whether the flow needs no task at all: pure steps, then a boundary whose writer can run on loop
    callbacks (``open_inline``), into a sink that says when it is ready — on asyncio."""
    return (
        bool(parts)
        and callable(getattr(parts[-1], "open_inline", None))
        and all(is_step(part) for part in parts[:-1])
        and isinstance(sink, ReadySink)
        and sniffio.current_async_library() == "asyncio"
    )


async def _run_inline(source: Source, parts: tuple[Any, ...], sink: ReadySink, halt: Halt | None) -> None:
    """:func:`run_flow` with no task: the source runs in the caller's task, the boundary's writer on loop
    callbacks (:class:`~pipeline.throttle.InlineWriter`).  The same contract: errors come as an exception
    group, ``halt`` and the caller's cancellation cancel the source, ``sink`` is closed at the end."""
    *steps, boundary = parts
    link, writer = boundary.open_inline(fuse(*steps) if steps else None, sink)
    failure: BaseException | None = None
    with sink:  # type: ignore[attr-defined]
        try:
            with halt.watching() if halt is not None else anyio.CancelScope() as scope:
                writer.on_error = scope.cancel
                try:
                    await source(link)  # closes the link when it ends
                    await writer.finished()
                except Exception as exc:
                    failure = exc
        finally:
            writer.close()
    errors = [e for e in (writer.error, failure) if e is not None]
    if errors:
        raise BaseExceptionGroup("the flow failed", errors)
