"""The first stage: pull items from an async iterable into the pipeline.

The source owns the iterable it is given: it closes it (``aclose()`` or an async
``close()``, as ``letta_client.AsyncStream`` has) when the iterable ends, when a
later stage stops reading, and when the pipeline is cancelled.  Closing runs
shielded and bounded, so a cancelled pipeline still releases the HTTP response
underneath.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Callable
from typing import Any

import anyio

from .stop import Stop
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
    stop: Stop | None = None,
    on_stop: Callable[[], Any] | None = None,
) -> bool:
    """Send every item of ``items``; return ``True`` if it was read to its end.

    With ``on_error``, an exception raised by the iterable becomes one last item
    (``on_error(exc)``) instead of tearing the pipeline down, and ``False`` is
    returned.  When ``stop`` is set (a server shutting down), reading ends at once,
    ``on_stop()`` (if given) is sent as the last item, and ``False`` is returned.
    Cancellation is never turned into an item.
    """
    with send:
        try:
            if stop is None:
                return await _pump(items, send, on_error)
            finished: bool | None = None
            with stop.watching():  # no task: setting the stop cancels this scope
                finished = await _pump(items, send, on_error)
            if finished is None:  # `stop` cancelled the reading
                if on_stop is not None:
                    await send.send(on_stop())
                return False
            return finished
        finally:
            await aclose_quietly(items)


async def _pump(items: AsyncIterable[Any], send: Send, on_error: Callable[[Exception], Any] | None) -> bool:
    try:
        async for item in items:
            await send.send(item)
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
