"""Ending open streams cleanly when the server is told to stop.

hypercorn reacts to SIGTERM/SIGINT by closing its listeners and then waiting up to
``graceful_timeout`` for open connections before cutting them — an SSE stream never
finishes on its own, so without help every student's answer would just break off.
This module puts a step in front of hypercorn's own handler: it sets the app's
``draining`` event, which makes every open stream end at once with a
``shutting_down`` error event (and its Letta run cancelled), and makes new streams
answer 503; then hypercorn's handler runs as before.

hypercorn installs its handlers with ``loop.add_signal_handler`` and exposes no
hook, so the existing handler is read from the loop (an asyncio implementation
detail).  Where that is not available (another loop, another platform, hypercorn
run with a custom shutdown trigger) nothing is changed and a line is logged.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from .errors import ApiError

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ShuttingDown(ApiError):
    status = 503
    code = "shutting_down"


def drain_before_server_signals(drain: Callable[[], None]) -> int:
    """Chain ``drain`` in front of the loop's SIGTERM/SIGINT handlers; how many were chained."""
    loop = asyncio.get_running_loop()
    handlers = getattr(loop, "_signal_handlers", None)
    chained = 0
    for sig in SIGNALS:
        handle = handlers.get(sig) if isinstance(handlers, dict) else None
        callback = getattr(handle, "_callback", None)
        if callback is None:
            continue
        args = getattr(handle, "_args", ())

        def first_drain(callback: Callable[..., object] = callback, args: tuple[object, ...] = args) -> None:
            drain()
            callback(*args)

        loop.add_signal_handler(sig, first_drain)
        chained += 1
    if chained == 0:
        log.info("no server signal handlers found: open streams will not be drained on shutdown")
    return chained
