"""A Quart response body that runs a pipeline for as long as the client listens.

Quart sends the headers, then runs ``async with body as it: async for chunk in it``
in one task; the pipeline's task group is opened in ``__aenter__`` and closed in
``__aexit__`` in that same task.  When the client disconnects, Quart cancels that
task: the cancellation reaches the pipeline, whose stages are cancelled and whose
source closes Letta's stream and cancels the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from anyio.streams.memory import MemoryObjectReceiveStream
from quart import Response
from quart.wrappers.response import ResponseBody

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class PipelineBody(ResponseBody):
    """Owns one pipeline: entered when the body starts, exited when it ends or is cancelled."""

    def __init__(self, pipeline: AbstractAsyncContextManager[MemoryObjectReceiveStream[Any]]) -> None:
        self._pipeline = pipeline
        self._frames: MemoryObjectReceiveStream[Any] | None = None

    async def __aenter__(self) -> PipelineBody:
        self._frames = await self._pipeline.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._pipeline.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> AsyncIterator[bytes]:
        assert self._frames is not None, "iterate the body inside `async with`"
        return self._frames.__aiter__()


def sse_response(pipeline: AbstractAsyncContextManager[MemoryObjectReceiveStream[Any]]) -> Response:
    """A 200 ``text/event-stream`` response streaming ``pipeline``'s frames, with no time limit."""
    response = Response(PipelineBody(pipeline), 200, SSE_HEADERS)
    response.timeout = None  # Quart's default RESPONSE_TIMEOUT would cut the stream at 60 s
    return response
