"""The keepalive stage: say something when nothing has been said for a while.

Proxies and browsers drop idle connections, and a client's read timeout longer
than ``interval`` then doubles as a dead-server detector.
"""

from __future__ import annotations

import anyio

from .events import Keepalive
from .streams import Receive, Send


async def keepalive(recv: Receive, send: Send, *, interval: float = 15.0) -> None:
    """Forward ``recv`` to ``send``, inserting a :class:`Keepalive` after ``interval`` idle seconds.

    A timer around one ``receive()`` loses no item when it fires.  Closes both streams.
    """
    with send, recv:
        while True:
            with anyio.move_on_after(interval) as idle:
                try:
                    event = await recv.receive()
                except anyio.EndOfStream:
                    return
            await send.send(Keepalive() if idle.cancelled_caught else event)
