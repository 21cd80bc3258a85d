"""Quart's HTTP connection handler, plus two guarantees for streaming bodies.

Quart sends the response headers before entering the body; a client that leaves
during that send cancels the task before ``__aenter__`` ever runs, and whatever the
body owns (an open Letta stream, a claimed agent) would leak.  After every response
this handler gives a :class:`~app.sse_body.PipelineBody` the chance to release it.

A client that stops reading ends a :class:`~app.sse_body.PipelineBody`'s pipeline after
the send timeout, but Quart then writes the response's last (empty) chunk, and that write
waits on the same full socket buffer — forever, for a client that neither reads nor
closes.  Once the body reports the stall, that write gets :data:`FINAL_WRITE_SECONDS`;
then it is given up, which leaves the response unfinished, so the server closes the
connection.  A :class:`~app.stream_body.StreamBody` times its writes itself: its
``cancel_write`` hook ends the handler as a disconnect does (the same ending, at once, and no
cancel scope per open stream).

Quart runs each request in two tasks of its own, beside hypercorn's (the handler and a
receiver, joined by ``asyncio.wait``).  Here the handler runs in hypercorn's task and only
the receiver gets one: on ``http.disconnect`` it cancels the handler, which ends as
Quart's would (its ``finally`` blocks run, the request returns normally); a cancellation
from outside (the server's shutdown) still propagates.  One task, its coroutines and the
wait's futures fewer per open stream.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request

from .sse_body import PipelineBody
from .stream_body import StreamBody

FINAL_WRITE_SECONDS = 1.0


class StreamingConnection(ASGIHTTPConnection):
    _handling = False
    _disconnected = False
    _handler: asyncio.Task[Any] | None = None

    async def __call__(self, receive: Any, send: Any) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handler = handler
        request = self._create_request_from_scope(send)
        receiver = asyncio.ensure_future(self._receive(request, receive))
        self._handling = True
        try:
            await self.handle_request(request, send)
            if self._disconnected:
                handler.uncancel()  # the handler took our cancellation itself: it is not hypercorn's task's
        except asyncio.CancelledError:
            # ours alone (the client left): end as Quart's handler task would, quietly
            if not self._disconnected or handler.uncancel() > 0:
                raise
        finally:
            self._handling = False  # no await before this: the receiver cancels nothing after it
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        if not receiver.cancelled() and receiver.exception() is not None:  # gathered above: it is done
            raise receiver.exception()  # type: ignore[misc]

    async def _receive(self, request: Request, receive: Any) -> None:
        """Quart's receiver; when it ends (``http.disconnect``, or an error) it cancels the running handler."""
        try:
            await self.handle_messages(request, receive)
        finally:
            self._end_handler()

    def _end_handler(self) -> None:
        """End the running handler as a disconnect does: cancelled, then returning quietly (once; none after it)."""
        if self._handling and not self._disconnected and self._handler is not None:
            self._disconnected = True
            self._handler.cancel()

    async def _send_response(self, send: Any, response: Any) -> None:
        body = getattr(response, "response", None)
        if isinstance(body, StreamBody):
            body.cancel_write = self._end_handler
            try:
                await super()._send_response(send, response)
            finally:
                await body.after_response()
            return
        if not isinstance(body, PipelineBody):
            await super()._send_response(send, response)
            return
        try:
            with anyio.CancelScope() as scope:
                body.on_stall = lambda: setattr(scope, "deadline", anyio.current_time() + FINAL_WRITE_SECONDS)
                await super()._send_response(send, response)
        finally:
            await body.after_response()
