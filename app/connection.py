"""Quart's HTTP connection handler, plus two guarantees for streaming bodies.

Quart sends the response headers before entering the body; a client that leaves
during that send cancels the task before ``__aenter__`` ever runs, and whatever the
body owns (an open Letta stream, a claimed agent) would leak.  After every response
this handler gives a :class:`~app.sse_body.PipelineBody` the chance to release it.

A client that stops reading ends a :class:`~app.sse_body.PipelineBody`'s pipeline after
the send timeout, but Quart then writes the response's last (empty) chunk, and that write
waits on the same full socket buffer — forever, for a client that neither reads nor
closes.  Once the body reports the stall, that write gets :data:`FINAL_WRITE_SECONDS`;
then it is abandoned, which leaves the response unfinished, so the server closes the
connection.  A :class:`~app.stream_body.StreamBody` times its writes itself: it gets the
hook that cancels the response's write (the same ending, at once).
"""

from __future__ import annotations

from typing import Any

import anyio
from quart.asgi import ASGIHTTPConnection

from .sse_body import PipelineBody
from .stream_body import StreamBody

FINAL_WRITE_SECONDS = 1.0


class StreamingConnection(ASGIHTTPConnection):
    async def _send_response(self, send: Any, response: Any) -> None:
        body = getattr(response, "response", None)
        if not isinstance(body, (PipelineBody, StreamBody)):
            await super()._send_response(send, response)
            return
        try:
            with anyio.CancelScope() as scope:
                if isinstance(body, StreamBody):
                    body.cancel_write = scope.cancel
                else:
                    body.on_stall = lambda: setattr(scope, "deadline", anyio.current_time() + FINAL_WRITE_SECONDS)
                await super()._send_response(send, response)
        finally:
            await body.abandon()
