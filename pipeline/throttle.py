"""The throttle stage: fewer, larger text frames, without holding anything else back.

Two tasks share one :class:`~pipeline.coalesce.Coalescer`: a reader that keeps
pulling from upstream while the writer is blocked on a slow consumer (so text keeps
merging instead of stalling the source), and a writer that sends what is due.  The
reader stops pulling only when the coalescer is full, which bounds memory and
passes backpressure upstream.
"""

from __future__ import annotations

import math

import anyio

from .coalesce import Coalescer
from .streams import Receive, Send


class _Wakeup:
    """A level-triggered wake-up between the reader and the writer."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, at_most: float = math.inf) -> None:
        with anyio.move_on_after(at_most):
            await self._event.wait()
        self._event = anyio.Event()


async def throttle(
    recv: Receive,
    send: Send,
    *,
    window: float = 0.05,
    max_chars: int = 4096,
    max_backlog: int = 32,
    max_buffered_chars: int = 65536,
) -> None:
    """Coalesce text and reasoning deltas within ``window`` seconds or ``max_chars``.

    Closes both streams; all held text is sent before ``send`` closes.
    """
    coalescer = Coalescer(window, max_chars, max_backlog, max_buffered_chars)
    to_writer, to_reader = _Wakeup(), _Wakeup()
    reading = True

    async def reader() -> None:
        nonlocal reading
        try:
            async for event in recv:
                coalescer.push(event, anyio.current_time())
                to_writer.set()
                while coalescer.full:
                    await to_reader.wait()
        finally:
            reading = False
            to_writer.set()

    async def writer() -> None:
        while True:
            batch = coalescer.take(anyio.current_time()) if reading else coalescer.flush()
            if batch:
                to_reader.set()
                for event in batch:
                    await send.send(event)
                continue
            if not reading:
                return
            deadline = coalescer.deadline
            await to_writer.wait(math.inf if deadline is None else deadline - anyio.current_time())

    with send, recv:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await writer()
            tg.cancel_scope.cancel()
