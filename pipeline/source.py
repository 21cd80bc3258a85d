"""The first stage: pull items from an async iterable into the pipeline.

The source owns the iterable it is given: it closes it (``aclose()`` or an async
``close()``, as ``letta_client.AsyncStream`` has) when the iterable ends, when a
later stage stops reading, and when the pipeline is cancelled.  Closing runs
shielded and bounded, so a cancelled pipeline still releases the HTTP response
underneath.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Awaitable, Callable
from functools import partial
from typing import Any, Protocol

import anyio

from .flag import Flag
from .halt import Halt
from .streams import Send

CLOSE_TIMEOUT = 5.0
"""Seconds a shielded close may take before it is given up."""


async def aclose_quietly(resource: object, within: float = CLOSE_TIMEOUT) -> None:
    """Close ``resource`` (``aclose()`` or ``close()``), shielded from cancellation and bounded in time."""
    closer = getattr(resource, "aclose", None) or getattr(resource, "close", None)
    if closer is None:
        return
    with anyio.move_on_after(within, shield=True):
        result = closer()
        if inspect.isawaitable(result):
            await result


async def read_source(
    items: AsyncIterable[Any],
    send: Send,
    *,
    on_error: Callable[[Exception], Any] | None = None,
    halt: Halt | None = None,
    on_halt: Callable[[], Any] | None = None,
) -> bool:
    """Send every item of ``items``; return ``True`` if it was read to its end.

    With ``on_error``, an exception raised by the iterable becomes one last item
    (``on_error(exc)``) instead of tearing the pipeline down, and ``False`` is
    returned.  When ``halt`` is set (a server shutting down), reading ends at once,
    ``on_halt()`` (if given) is sent as the last item, and ``False`` is returned.
    Cancellation is never turned into an item.
    """
    return await _read(partial(_pump, items, send), items, send, on_error, halt, on_halt)


async def _read(
    pump: Callable[[], Awaitable[None]],
    owned: object,
    send: Send,
    on_error: Callable[[Exception], Any] | None,
    halt: Halt | None,
    on_halt: Callable[[], Any] | None,
) -> bool:
    """Run ``pump`` as :func:`read_source` promises (errors, a halt, the end); close ``send`` and ``owned``."""
    with send:
        try:
            if halt is None:
                return await _guarded(pump, send, on_error)
            finished: bool | None = None
            with halt.watching():  # no task: setting the halt cancels this scope
                finished = await _guarded(pump, send, on_error)
            if finished is None:  # `halt` cancelled the reading
                if on_halt is not None:
                    await send.send(on_halt())
                return False
            return finished
        finally:
            await aclose_quietly(owned)


async def _guarded(
    pump: Callable[[], Awaitable[None]], send: Send, on_error: Callable[[Exception], Any] | None
) -> bool:
    """Whether ``pump`` read its source to the end; a failure is ``on_error``'s last item (or raised)."""
    try:
        await pump()
    except anyio.get_cancelled_exc_class():
        raise
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return False
    except Exception as exc:
        if on_error is None:
            raise
        await send.send(on_error(exc))
        return False
    return True


async def _pump(items: AsyncIterable[Any], send: Send) -> None:
    async for item in items:
        await send.send(item)


class Pushing(Protocol):
    """A source that hands its items over from the event loop's callbacks instead of being iterated.

    ``push(take, on_end)`` starts the delivery: ``take(item)`` for every item, then ``on_end(error)``
    once (``None`` at the end, or the exception iterating would have raised).  ``pause()`` holds the
    items back until ``resume()``.  :class:`~pipeline.letta_raw.RawLettaStream` over a
    :class:`~pipeline.letta_raw.PushBody` is one.
    """

    def push(self, take: Callable[[Any], object], on_end: Callable[[BaseException | None], object]) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


async def read_pushed(
    source: Pushing,
    send: Send,
    *,
    on_error: Callable[[Exception], Any] | None = None,
    halt: Halt | None = None,
    on_halt: Callable[[], Any] | None = None,
) -> bool:
    """:func:`read_source` for a source that pushes its items: the same contract, without a task step per item.

    Each item goes to ``send.send_nowait`` from the callback that delivered it; only when ``send``
    declines one (it is full: backpressure) is the source paused and what it still delivers kept, in
    order, for this task to send (waiting), before the source resumes.  The source is closed at the end,
    as :func:`read_source` closes its iterable.
    """
    return await _read(partial(_pump_pushed, source, send), source, send, on_error, halt, on_halt)


class _Delivery:
    """What a pushing source's callbacks leave for the task that waits for them: items ``send`` declined,
    the end, a failure; and the flag that wakes that task."""

    __slots__ = ("backlog", "ended", "error", "send", "source", "woken")

    def __init__(self, source: Pushing, send: Send) -> None:
        self.source = source
        self.send = send
        self.backlog: list[Any] = []  # a list: an empty deque holds a block of ~0.7 KiB
        self.ended = False
        self.error: BaseException | None = None
        self.woken = Flag()

    def take(self, item: Any) -> None:
        if self.ended:
            return
        if self.backlog:  # an earlier item waits for room: this one waits behind it
            self.backlog.append(item)
            return
        try:
            self.send.send_nowait(item)
        except anyio.WouldBlock:
            self.backlog.append(item)
            self.source.pause()
            self.woken.set()
        except Exception as exc:  # as `send.send` raising it: the sink failed or went away
            self.end(exc)
            self.source.pause()

    def end(self, error: BaseException | None) -> None:
        if not self.ended:
            self.ended, self.error = True, error
            self.woken.set()


async def _pump_pushed(source: Pushing, send: Send) -> None:
    delivery = _Delivery(source, send)
    source.push(delivery.take, delivery.end)
    while True:
        await delivery.woken.wait()
        delivery.woken = Flag()
        backlog = delivery.backlog
        while backlog:  # the item being sent stays first: anything delivered meanwhile queues behind it
            await send.send(backlog[0])
            del backlog[0]
        if delivery.ended:
            if delivery.error is not None:
                raise delivery.error
            return
        source.resume()
