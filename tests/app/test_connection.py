"""``StreamingConnection.__call__``: the handler in the caller's task, cancelled by the receiver on disconnect.

Driven through raw ASGI calls, so the test sees the calling task's own cancellation state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart

from app.connection import StreamingConnection

pytestmark = pytest.mark.anyio

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/s",
    "raw_path": b"/s",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"x")],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 2),
    "extensions": {},
}


def streaming_app(log: list[str]) -> Quart:
    app = Quart(__name__)
    app.asgi_http_class = StreamingConnection  # type: ignore[assignment]

    @app.get("/s")
    async def stream() -> Any:
        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"data: {}\n\n"
                await asyncio.Event().wait()  # an answer that never ends by itself
            finally:
                log.append("body closed")

        response = app.response_class(body(), mimetype="text/event-stream")
        response.timeout = None
        return response

    return app


async def serve_one(
    app: Quart, disconnect: asyncio.Event, sent: list[dict[str, Any]], streaming: asyncio.Event
) -> None:
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body"):
            streaming.set()

    async with app.test_app():
        await app(dict(SCOPE), receive, send)  # type: ignore[arg-type]


async def test_a_disconnect_ends_the_handler_quietly_and_leaves_no_cancellation_behind() -> None:
    log: list[str] = []
    sent: list[dict[str, Any]] = []
    disconnect = asyncio.Event()
    app = streaming_app(log)

    async def client() -> int:
        streaming = asyncio.Event()
        task = asyncio.create_task(serve_one(app, disconnect, sent, streaming))
        await asyncio.wait_for(streaming.wait(), 5)
        disconnect.set()
        await asyncio.wait({task}, timeout=5)
        assert task.done(), "the disconnect did not end the handler"
        task.result()  # returned normally: the handler's cancellation was the receiver's
        return task.cancelling()

    assert await client() == 0  # nothing left for hypercorn's task to misread as its own cancellation
    assert log == ["body closed"]
    assert sent[0]["type"] == "http.response.start"
    tasks = [t for t in asyncio.all_tasks() if "_receive" in repr(t.get_coro())]
    assert tasks == []  # the receiver was awaited


async def test_a_cancellation_from_outside_still_propagates() -> None:
    log: list[str] = []
    sent: list[dict[str, Any]] = []
    app = streaming_app(log)
    streaming = asyncio.Event()
    task = asyncio.create_task(serve_one(app, asyncio.Event(), sent, streaming))
    await asyncio.wait_for(streaming.wait(), 5)
    task.cancel()  # the server shutting down, not the client leaving
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["body closed"]
