"""A Quart response body that runs a pipeline for as long as the client listens.

Quart sends the headers, then runs ``async with body as it: async for chunk in it``
in one task; the pipeline's task group is opened in ``__aenter__`` and closed in
``__aexit__`` in that same task.  When the client disconnects, Quart cancels that
task: the cancellation reaches the pipeline, whose stages are cancelled and whose
source closes Letta's stream and cancels the run.

Every frame that is ready when the body writes goes out in one write (the pipeline's
``receive_ready()``): a client that is behind costs one write per burst, not per frame.

``finalize(entered)`` runs exactly once when the body is done with: after
``__aexit__``, or — if the client vanished before the body was ever entered —
from :meth:`PipelineBody.after_response`, which :class:`app.connection.StreamingConnection`
calls after every response.  Either way it runs shielded from cancellation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

import anyio
from quart import Response
from quart.wrappers.response import ResponseBody

from pipeline.errors import ConsumerStalled
from pipeline.streams import Receive

log = logging.getLogger(__name__)

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

Finalize = Callable[[bool, BaseException | None], Awaitable[None]]
"""``finalize(entered, error)``: ``entered`` is False when the pipeline never started."""


class PipelineBody(ResponseBody):
    """Owns one pipeline: entered when the body starts, exited when it ends or is cancelled."""

    def __init__(
        self,
        pipeline: AbstractAsyncContextManager[Receive],
        finalize: Finalize | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._finalize = finalize
        self._frames: Receive | None = None
        self._entered = False
        self._finalized = False
        self.on_stall: Callable[[], object] | None = None
        """Called when the client stopped reading: the response must not wait on it either."""

    async def __aenter__(self) -> PipelineBody:
        self._entered = True
        try:
            self._frames = await self._pipeline.__aenter__()
        except BaseException as exc:
            await self._run_finalize(exc)
            raise
        return self

    async def __aexit__(  # type: ignore[override]  # Quart's `async with` honours a True return
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        error: BaseException | None = exc
        try:
            await self._pipeline.__aexit__(exc_type, exc, tb)
        except BaseException as raised:
            stalled = _find(raised, ConsumerStalled)
            error = stalled or raised
            if stalled is None:
                raise
            log.info("stream closed: %s", stalled)
            if self.on_stall is not None:
                self.on_stall()  # the connection handler bounds the response's last write
            return True
        finally:
            await self._run_finalize(error)
        return False

    def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._frames is not None, "iterate the body inside `async with`"
        if hasattr(self._frames, "receive_ready"):
            return _ReadyFrames(self._frames)
        return self._frames.__aiter__()  # type: ignore[no-any-return]

    async def after_response(self) -> None:
        """Release what the body owns if it was never entered (the client left before it started)."""
        if not self._entered:
            await self._run_finalize(None)

    async def _run_finalize(self, error: BaseException | None) -> None:
        if self._finalized or self._finalize is None:
            return
        self._finalized = True
        with anyio.CancelScope(shield=True):
            await self._finalize(self._entered, error)


WRITE_BYTES = 65536
"""At most this much goes into one write: what a stalled client's connection holds stays bounded."""


class _ReadyFrames:
    """The body's chunks: every frame ready at the time (up to :data:`WRITE_BYTES`), joined: one write for a burst."""

    def __init__(self, frames: Any) -> None:
        self._frames = frames

    def __aiter__(self) -> _ReadyFrames:
        return self

    async def __anext__(self) -> bytes:
        try:
            ready: list[bytes] = await self._frames.receive_ready(WRITE_BYTES)
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        return ready[0] if len(ready) == 1 else b"".join(ready)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` itself or the first ``kind`` inside its (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def sse_response(
    pipeline: AbstractAsyncContextManager[Receive],
    finalize: Finalize | None = None,
) -> Response:
    """A 200 ``text/event-stream`` response streaming ``pipeline``'s frames, with no time limit."""
    response = Response(PipelineBody(pipeline, finalize), 200, SSE_HEADERS)
    response.timeout = None  # Quart's default RESPONSE_TIMEOUT would cut the stream at 60 s
    return response
