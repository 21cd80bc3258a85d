"""A hand-over from one producer to one consumer that runs its own timers.

Like an anyio memory object stream of ``limit`` items, for a consumer that writes what
it takes somewhere slow (an HTTP response) and keeps its own clock (keepalives, a send
timeout).  Two differences, both measured per frame on the service's hot path:

* The consumer takes *everything pending* at once (:meth:`HandoffReceive.receive_nowait`
  answers a list) and waits with :meth:`HandoffReceive.wait`, which returns when items
  came, when the producer closed, or when anyone called :meth:`HandoffReceive.wake` — a
  timer callback, a halt (:mod:`pipeline.halt`).  A memory stream's ``receive()`` can only be ended early
  by cancelling it, i.e. a cancel scope per wait.
* Nothing that goes through at once costs a checkpoint: a producer whose item fits, and a
  consumer that finds items waiting, do not yield to the event loop.  (A memory stream's
  ``send()`` and ``receive()`` always checkpoint first: one more loop iteration each.)

Contract.  Each end is owned by one task and closed by its owner (``with`` closes it).
After the producer closed, the consumer still gets what is pending, then
:class:`anyio.EndOfStream`.  After the consumer closed, every send raises
:class:`anyio.BrokenResourceError` (a waiting one too) and what was pending is dropped.
Using a closed end raises :class:`anyio.ClosedResourceError`.  Waits are cancellable.
Backend-neutral (:class:`~pipeline.flag.Flag`): it runs under asyncio and trio.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

import anyio
import attrs

from .flag import Flag

T = TypeVar("T")


@attrs.frozen
class HandoffStatistics:
    pending: int
    """Items sent and not yet taken."""
    limit: int
    consumer_waiting: bool
    producer_waiting: bool
    send_open: bool
    receive_open: bool


class _Call:
    """A producer that waits by callback (:meth:`HandoffSend.call_when_ready`): ``set`` calls it."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback = callback

    def set(self) -> None:
        self._callback()


@attrs.define(eq=False)
class _State(Generic[T]):
    limit: int
    pending: list[T] = attrs.Factory(list)
    send_open: bool = True
    receive_open: bool = True
    woken: bool = False
    consumer: Flag | None = None
    producer: Flag | _Call | None = None

    def wake_consumer(self) -> None:
        if self.consumer is not None:
            self.consumer.set()
            self.consumer = None

    def wake_producer(self) -> None:
        producer, self.producer = self.producer, None  # first: a callback may wait again at once
        if producer is not None:
            producer.set()


def create_handoff(limit: int = 1) -> tuple[HandoffSend[T], HandoffReceive[T]]:
    """A new hand-over holding at most ``limit`` items; its producer's end and its consumer's end."""
    if limit < 1:
        raise ValueError("a hand-over holds at least one item")
    state: _State[T] = _State(limit)
    return HandoffSend(state), HandoffReceive(state)


class HandoffSend(Generic[T]):
    """The producer's end."""

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False

    def ready(self) -> bool:
        """Whether :meth:`send_nowait` would not block now (it may still raise: the consumer left)."""
        state = self._state
        return not state.receive_open or len(state.pending) < state.limit

    def send_nowait(self, item: T) -> None:
        """Hand ``item`` over now, or raise :class:`anyio.WouldBlock` (``limit`` items are pending)."""
        if self._closed:
            raise anyio.ClosedResourceError
        state = self._state
        if not state.receive_open:
            raise anyio.BrokenResourceError
        if len(state.pending) >= state.limit:
            raise anyio.WouldBlock
        state.pending.append(item)
        state.wake_consumer()

    def call_when_ready(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once :meth:`send_nowait` would not block (now, if it would not now).

        For a producer without a task of its own (a loop callback): it stands for one waiting
        :meth:`send`, and is called when the consumer takes what is pending or leaves.
        """
        if self.ready():
            callback()
        else:
            self._state.producer = _Call(callback)

    async def send(self, item: T) -> None:
        """Hand ``item`` over, waiting while ``limit`` items are pending."""
        while True:
            try:
                self.send_nowait(item)
                return
            except anyio.WouldBlock:
                pass  # wait outside the handler: a wait inside it would hold the exception and its frames
            event = self._state.producer = Flag()
            await event.wait()

    def close(self) -> None:
        """The consumer gets what is pending, then :class:`anyio.EndOfStream`.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._state.send_open = False
        self._state.wake_consumer()

    def statistics(self) -> HandoffStatistics:
        return _statistics(self._state)

    def __enter__(self) -> HandoffSend[T]:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class HandoffReceive(Generic[T]):
    """The consumer's end."""

    def __init__(self, state: _State[T]) -> None:
        self._state = state
        self._closed = False

    def receive_nowait(self) -> list[T]:
        """Every pending item, oldest first; :class:`anyio.WouldBlock` if none, then :class:`anyio.EndOfStream`."""
        if self._closed:
            raise anyio.ClosedResourceError
        state = self._state
        if state.pending:
            items, state.pending = state.pending, []
            state.wake_producer()
            return items
        if not state.send_open:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def wait(self) -> None:
        """Return once an item is pending, the producer closed, or :meth:`wake` was called.

        Returns at once (no checkpoint) if one of these holds already; a ``wake()`` is
        used up by the wait it ends.
        """
        if self._closed:
            raise anyio.ClosedResourceError
        state = self._state
        if not (state.pending or not state.send_open or state.woken):
            event = state.consumer = Flag()
            try:
                await event.wait()
            finally:
                if state.consumer is event:
                    state.consumer = None
        state.woken = False

    def wake(self) -> None:
        """End the current :meth:`wait`, or the next one if none is waiting (from any task or loop callback)."""
        state = self._state
        state.woken = True
        state.wake_consumer()

    def close(self) -> None:
        """Drop what is pending; the producer's sends raise :class:`anyio.BrokenResourceError`.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        state = self._state
        state.receive_open = False
        state.pending.clear()
        state.wake_producer()

    def statistics(self) -> HandoffStatistics:
        return _statistics(self._state)

    def __enter__(self) -> HandoffReceive[T]:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _statistics(state: _State[T]) -> HandoffStatistics:
    return HandoffStatistics(
        pending=len(state.pending),
        limit=state.limit,
        consumer_waiting=state.consumer is not None,
        producer_waiting=state.producer is not None,
        send_open=state.send_open,
        receive_open=state.receive_open,
    )
