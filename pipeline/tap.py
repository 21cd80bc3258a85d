"""The tap stage: pass events through unchanged, showing each to an observer (metrics, logs).

:class:`Observe` is the same as a pure step, fused into a neighbouring task by
:func:`pipeline.compose.open_flow`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .streams import Receive, Send


async def tap(recv: Receive, send: Send, *, observe: Callable[[Any], object]) -> None:
    """Forward every item of ``recv``, calling ``observe(item)`` first.  Closes both streams.

    ``observe`` is synchronous and must be quick: it runs on the stream's path.
    """
    with send, recv:
        async for item in recv:
            observe(item)
            await send.send(item)


class Observe:
    """A pure step that shows every item to ``observe`` and passes it on (:func:`tap` without a task)."""

    __slots__ = ("observe",)

    def __init__(self, observe: Callable[[Any], object]) -> None:
        self.observe = observe

    def feed(self, item: Any) -> tuple[Any]:
        self.observe(item)
        return (item,)

    def finish(self) -> tuple[()]:
        return ()
