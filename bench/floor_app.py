"""The floor: the design card's stack with nothing of ours — what any design on it costs at least.

``python -m bench.floor_app --port P --letta URL [--window S]``

Quart on hypercorn, configured as deployed (``hypercorn.toml``, its event loop included, and
the collector tuned as the service tunes it), serving ``POST /chat/stream`` with the least
code that still does the job the classroom measures: one raw asyncio connection per stream to
the emulator (no letta-client, no httpx, no pool), a minimal parse of its chunked
``data: {json}`` frames, the text coalesced with a leading 50 ms window, and
``data: {"type": "message", ...}`` / ``data: {"type": "done"}`` out.

It is a lower bound, not an alternative: it has no auth, no agents, no turn store or log
(resume), no keepalive, no send timeout, no error events, and it does not ask Letta to cancel
a run (a client that leaves closes its upstream connection).  If this misses a delay target
at a load, no app on the card's stack meets it on that machine; what ours costs above it is
what our own code adds.  Binds 127.0.0.1 only; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import orjson
from hypercorn.asyncio import serve
from quart import Quart, Response, request

from app.collector import tune

from .letta_emulator import raise_fd_limit
from .service_proc import deployed_config, run_on_deployed_loop

DONE = b'data: {"type":"done"}\n\n'


class Upstream(asyncio.Protocol):
    """One emulator stream: skips the response head, unframes chunks, hands each text delta to ``push``.

    ``end`` is called once the stream's last chunk arrives or the connection is lost.
    """

    def __init__(self, push: Callable[[str], None], end: Callable[[], None]) -> None:
        self._push, self._end = push, end
        self._buffer = b""
        self._in_body = False

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        if not self._in_body:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                self._buffer = buffer
                return
            buffer, self._in_body = buffer[head_end + 4 :], True
        while (line_end := buffer.find(b"\r\n")) >= 0:
            size = int(buffer[:line_end], 16)
            if size == 0:
                self._end()
                buffer = b""
                break
            if len(buffer) < line_end + 4 + size:
                break
            frame, buffer = buffer[line_end + 2 : line_end + 2 + size], buffer[line_end + 4 + size :]
            data_line = frame.removeprefix(b"data: ").rstrip(b"\n")
            if data_line != b"[DONE]":
                chunk = orjson.loads(data_line)
                if chunk.get("message_type") == "assistant_message":
                    self._push(chunk["content"])
        self._buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()


def make_app(letta_host: str, letta_port: int, window: float) -> Quart:
    app = Quart(__name__)

    @app.before_serving
    async def tune_collector() -> None:
        tune(50_000)  # as the service does once it has started

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/chat/stream")
    async def chat_stream() -> Response:
        body = await request.get_json()
        loop = asyncio.get_running_loop()
        pending: list[str] = []
        ready = asyncio.Event()
        ended = False

        def push(text: str) -> None:
            pending.append(text)
            ready.set()

        def end() -> None:
            nonlocal ended
            ended = True
            ready.set()

        transport, _ = await loop.create_connection(lambda: Upstream(push, end), letta_host, letta_port)
        payload = orjson.dumps({"input": body["message"], "streaming": True, "stream_tokens": True})
        transport.write(
            b"POST /v1/agents/%s/messages HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (body["agent_id"].encode(), letta_host.encode(), len(payload), payload)
        )

        async def frames() -> AsyncIterator[bytes]:
            sent_at = -window  # the first text goes at once; later ones wait out the window since the last frame
            try:
                while True:
                    await ready.wait()
                    ready.clear()
                    if (wait := sent_at + window - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    sent_at = loop.time()
                    if pending:
                        text = "".join(pending)
                        pending.clear()
                        yield b"data: " + orjson.dumps({"type": "message", "content": text}) + b"\n\n"
                    if ended:
                        yield DONE
                        return
            finally:
                transport.close()

        response = Response(frames(), content_type="text/event-stream")
        response.timeout = None  # Quart's 60 s default would cut a long stream
        return response

    return app


async def run(args: argparse.Namespace) -> None:
    letta = urlsplit(args.letta)
    config = deployed_config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    shutdown = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, shutdown.set)
    app = make_app(letta.hostname or "127.0.0.1", letta.port or 80, args.window)
    await serve(app, config, shutdown_trigger=shutdown.wait)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--letta", required=True)
    parser.add_argument("--window", type=float, default=0.05)
    args = parser.parse_args()
    raise_fd_limit()
    run_on_deployed_loop(run(args))


if __name__ == "__main__":
    main()
