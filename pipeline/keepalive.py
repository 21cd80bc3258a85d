"""The keepalive stage: say something when nothing has been said for a while.

Proxies and browsers drop idle connections, and a client's read timeout longer
than ``interval`` then doubles as a dead-server detector.
"""

from __future__ import annotations

from functools import partial

import anyio
import anyio.lowlevel

from .errors import ConsumerStalled
from .events import Keepalive
from .streams import Receive, Send


async def keepalive(recv: Receive, send: Send, *, interval: float = 15.0, send_timeout: float | None = None) -> None:
    """Forward ``recv`` to ``send``, inserting a :class:`Keepalive` after ``interval`` idle seconds.

    A timer around one ``receive()`` loses no item when it fires.  With ``send_timeout``,
    a consumer that takes nothing for that long raises :class:`ConsumerStalled` (as
    :func:`~pipeline.encode.encode_sse` does).  Closes both streams.
    """
    put = send.send if send_timeout is None else partial(_send_within, send, send_timeout)
    with send, recv:
        while True:
            try:  # an item already waiting needs no timer (a timer costs more than the hand-over)
                await put(recv.receive_nowait())
                continue
            except anyio.WouldBlock:
                pass
            except anyio.EndOfStream:
                return
            with anyio.move_on_after(interval) as idle:
                try:
                    event = await recv.receive()
                except anyio.EndOfStream:
                    return
            await put(Keepalive() if idle.cancelled_caught else event)


async def _send_within(send: Send, limit: float, item: object) -> None:
    try:
        send.send_nowait(item)  # taken at once (or joins a batch): no timer needed
        return
    except anyio.WouldBlock:
        pass
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled pipeline ends by its cancellation, not this
        raise
    with anyio.move_on_after(limit) as waited:
        await send.send(item)
    if waited.cancelled_caught:
        raise ConsumerStalled(f"no frame taken for {limit} s")


class IdleKeepalive:
    """The keepalive without a task, for :func:`~pipeline.compose.open_flow`: the reader of its
    link (the next stage, or the caller) gets a :class:`Keepalive` when it waited ``interval``
    seconds for nothing."""

    __slots__ = ("interval",)

    def __init__(self, interval: float = 15.0) -> None:
        self.interval = interval
