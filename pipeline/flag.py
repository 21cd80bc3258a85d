"""A flag one task waits on: :class:`anyio.Event`'s contract for a single waiter, smaller.

Every held stream parks a few tasks on events (the throttle's wake-ups, the hand-over to
the response, the log writer).  ``anyio.Event`` on asyncio wraps an ``asyncio.Event``,
whose waiter deque alone is ~0.8 KiB whether anyone waits or not; a :class:`Flag` is two
slots, and while a task waits, one loop future (under trio, an ``anyio.Event`` made for
that wait).

Contract.  :meth:`Flag.set` marks it for good and wakes the waiter (from any task or loop
callback of the same loop; idempotent).  :meth:`Flag.wait` returns once it is marked — with
a checkpoint if it already was, as ``anyio.Event.wait`` does — and is cancellable.  One
task waits at a time: a second concurrent :meth:`wait` raises
:class:`anyio.BusyResourceError` (the stages that use it have one consumer by design).
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.lowlevel
import sniffio


class Flag:
    __slots__ = ("_marked", "_waiter")

    def __init__(self) -> None:
        self._marked = False
        self._waiter: asyncio.Future[None] | anyio.Event | None = None

    def set(self) -> None:
        if self._marked:
            return
        self._marked = True
        waiter = self._waiter
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(None)
        elif waiter is not None:
            waiter.set()

    def is_set(self) -> bool:
        return self._marked

    async def wait(self) -> None:
        if self._marked:
            await anyio.lowlevel.checkpoint()
            return
        if self._waiter is not None:
            raise anyio.BusyResourceError("waiting on")
        waiter: asyncio.Future[None] | anyio.Event
        if sniffio.current_async_library() == "asyncio":
            waiter = asyncio.get_running_loop().create_future()
        else:
            waiter = anyio.Event()
        self._waiter = waiter
        try:
            await (waiter if isinstance(waiter, asyncio.Future) else waiter.wait())
        finally:
            self._waiter = None
