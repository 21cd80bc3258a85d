"""The running loop's clock, and a wake-up with a deadline, for stages that wait per event.

Two costs this module keeps off a stage's per-event path, measured on asyncio:

* ``anyio.current_time()`` finds the running backend on every call (sniffio, then the
  backend); :func:`clock` finds it once and answers the same clock's bound method.
* A timed wait through ``anyio.move_on_after`` that runs out is a cancellation: the
  waiting task gets ``CancelledError`` thrown through its frames and the scope catches it
  (~29 µs here, against ~8 µs for a loop timer that sets an event).  A throttle waits out
  a window per frame, so on asyncio :class:`Wakeup` ends a timed wait with a loop timer
  instead; under trio (cheap cancellation) it uses a cancel scope as before.

Same values, same semantics on both backends; only the cost differs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import anyio
import sniffio

from .flag import Flag


def clock() -> Callable[[], float]:
    """A function answering what ``anyio.current_time()`` answers in this task's event loop.

    Call it inside the event loop that will read the clock (it binds to that loop).
    """
    if sniffio.current_async_library() == "asyncio":
        return asyncio.get_running_loop().time
    return anyio.current_time


class Wakeup:
    """A level-triggered wake-up between two tasks of one event loop.

    :meth:`set` marks it (from any task or loop callback); :meth:`set_at` marks it at a
    given time of :func:`clock`; :meth:`wait` returns once it is marked — at once if it
    already is, without a checkpoint — or after ``at_most`` seconds, and clears the mark
    it saw.  A wait is cancellable as any other.

    ``set_at`` lets a producer tell a waiting consumer *when* to wake (a throttle's window
    end) without waking it now only to learn the time: one wake-up per window instead of
    two.  On asyncio it is a loop timer; elsewhere it marks at once (the consumer then
    looks up the time itself, as before).  A wait that returns cancels a pending ``set_at``.
    """

    def __init__(self) -> None:
        self._event = Flag()
        self._loop: asyncio.AbstractEventLoop | bool | None = False  # False: not looked up yet
        self._timer: asyncio.TimerHandle | None = None

    def set(self) -> None:
        self._event.set()

    def set_at(self, when: float) -> None:
        """Mark it at ``when`` (a time of :func:`clock`), or sooner if already asked to."""
        loop = self._running_loop()
        if loop is None:
            self._event.set()
            return
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = loop.call_at(when, self._event.set)

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop
        if loop is False:
            loop = self._loop = asyncio.get_running_loop() if sniffio.current_async_library() == "asyncio" else None
        return loop if isinstance(loop, asyncio.AbstractEventLoop) else None

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, at_most: float = math.inf) -> None:
        event = self._event
        if not event.is_set():
            if at_most == math.inf:
                await event.wait()
            else:
                await self._wait_for(event, at_most)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if event.is_set():  # a timer that ran out under trio leaves the event as it was: keep it
            self._event = Flag()

    async def _wait_for(self, event: Flag, at_most: float) -> None:
        loop = self._running_loop()
        if loop is not None:
            timer = loop.call_later(max(at_most, 0.0), event.set)
            try:
                await event.wait()
            finally:
                timer.cancel()
        else:
            with anyio.move_on_after(at_most):
                await event.wait()
