"""Quart's HTTP connection handler, plus one guarantee: a streaming body is always finalized.

Quart sends the response headers before entering the body; a client that leaves
during that send cancels the task before ``__aenter__`` ever runs, and whatever the
body owns (an open Letta stream, a claimed agent) would leak.  After every response
this handler gives a :class:`~app.sse_body.PipelineBody` the chance to release it.
"""

from __future__ import annotations

from typing import Any

from quart.asgi import ASGIHTTPConnection

from .sse_body import PipelineBody


class StreamingConnection(ASGIHTTPConnection):
    async def _send_response(self, send: Any, response: Any) -> None:
        try:
            await super()._send_response(send, response)
        finally:
            body = getattr(response, "response", None)
            if isinstance(body, PipelineBody):
                await body.abandon()
