"""The tap stage: pass events through unchanged, showing each to an observer (metrics, logs)."""

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
