"""The encode stage: events in, SSE frame bytes out."""

from __future__ import annotations

from .sse import SSEEncoder
from .streams import Receive, Send


async def encode_sse(recv: Receive, send: Send, *, encoder: SSEEncoder | None = None) -> None:
    """Encode every event of ``recv`` as one SSE frame.  Closes both streams."""
    encoder = encoder if encoder is not None else SSEEncoder()
    with send, recv:
        async for event in recv:
            await send.send(encoder.encode(event))
