"""The encode stage: events in, SSE frame bytes out."""

from __future__ import annotations

import math

import anyio

from .errors import ConsumerStalled
from .sse import SSEEncoder
from .streams import Receive, Send


async def encode_sse(
    recv: Receive, send: Send, *, encoder: SSEEncoder | None = None, send_timeout: float | None = None
) -> None:
    """Encode every event of ``recv`` as one SSE frame.  Closes both streams.

    Items that are ``bytes`` already (frames encoded upstream) pass through unchanged.

    With ``send_timeout``, a consumer that takes no frame for that long raises
    :class:`ConsumerStalled`, which ends the whole pipeline (and so cancels the
    source): a client that stopped reading does not hold a turn open forever.
    """
    encoder = encoder if encoder is not None else SSEEncoder()
    limit = math.inf if send_timeout is None else send_timeout
    with send, recv:
        async for event in recv:
            frame = event if type(event) is bytes else encoder.encode(event)
            with anyio.move_on_after(limit) as waited:
                await send.send(frame)
            if waited.cancelled_caught:
                raise ConsumerStalled(f"no frame taken for {send_timeout} s")
