"""The protocol transport (``app/letta_protocol.py``) against real sockets: what the shared contract tests in
``test_letta_http.py`` do not cover — keep-alive, the body's framings, pushing with backpressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import orjson
import pytest
import sniffio
from letta_client import AsyncLetta

from app.letta_protocol import HIGH_WATER, Transport
from app.store.memory import MemoryStore
from app.turn_host import TurnHost
from app.turn_machine import Claim
from app.turn_runner import TurnRunner
from pipeline.events import Done, Text
from pipeline.handoff import create_handoff
from pipeline.letta_map import LettaMapper
from pipeline.letta_raw import RawLettaStream, open_raw_stream
from pipeline.letta_turn import LettaTurn, letta_source, start_turn
from pipeline.sse import SSEParser
from pipeline.wire import parse_event
from tests.app.test_log_replay import AGENT, TURN, _Canceller
from tests.collector import alive, collector_held

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[pytest.param("asyncio", id="asyncio"), pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """asyncio's protocols (the transport is asyncio only), on asyncio's own loop and on uvloop's
    (hypercorn's ``worker_class = "uvloop"``, whose transports are not ``asyncio.Transport`` subclasses)."""
    return request.param


Answer = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request (its head); False closes the connection."""


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[str, list[int]]]:
    """A keep-alive HTTP server on loopback; yields its URL and the number of requests per connection so far."""
    per_connection: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_connection.append(0)
        index = len(per_connection) - 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [
                    int(v)
                    for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                    if k.lower() == b"content-length"
                ]
                if length:
                    await reader.readexactly(length[0])
                per_connection[index] += 1
                if not await answer(head, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", per_connection
    finally:
        srv.close()
        await srv.wait_closed()


async def json_ok(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]")
    await writer.drain()
    return True


async def test_a_connection_serves_request_after_request() -> None:
    async with server(json_ok) as (url, per_connection), httpx.AsyncClient(transport=Transport()) as http:
        for _ in range(3):
            response = await http.post(url + "/v1/agents/", json={"name": "x"})
            assert response.json() == []
    assert per_connection == [3]


async def test_a_connection_the_server_closes_is_not_used_again() -> None:
    async def close_after(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        return False

    async with server(close_after) as (url, per_connection), httpx.AsyncClient(transport=Transport()) as http:
        assert (await http.get(url)).text == "ok"
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        assert (await http.get(url)).text == "ok"
        assert (await http.get(url)).text == "ok"
    assert per_connection == [1, 1, 1]


async def test_an_idle_connection_expires() -> None:
    async with (
        server(json_ok) as (url, per_connection),
        httpx.AsyncClient(transport=Transport(keepalive_expiry=0.05)) as http,
    ):
        await http.get(url)
        await asyncio.sleep(0.1)
        await http.get(url)
    assert per_connection == [1, 1]


async def test_a_body_that_ends_with_its_connection_is_read_whole() -> None:
    async def until_close(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"second")
        await writer.drain()
        return False

    async with server(until_close) as (url, _), httpx.AsyncClient(transport=Transport()) as http:
        assert (await http.get(url)).text == "first second"


async def test_head_has_no_body_and_an_interim_response_is_skipped() -> None:
    async def answer(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-kind: real\r\n\r\n")
        if not head.startswith(b"HEAD"):
            writer.write(b"hello")
        await writer.drain()
        return True

    async with server(answer) as (url, per_connection), httpx.AsyncClient(transport=Transport()) as http:
        response = await http.head(url)
        assert (response.status_code, response.headers["x-kind"], response.content) == (200, "real", b"")
        response = await http.get(url)
        assert (response.status_code, response.text) == (200, "hello")
    assert per_connection == [1, 1]  # a HEAD's connection is not reused: its parser expected a body


async def test_a_large_body_read_slowly_arrives_whole() -> None:
    payload = bytes(range(256)) * (3 * HIGH_WATER // 256)

    async def big(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()
        return True

    got = bytearray()
    async with (
        server(big) as (url, _),
        httpx.AsyncClient(transport=Transport()) as http,
        http.stream("GET", url) as response,
    ):
        async for chunk in response.aiter_raw():
            got += chunk
            await asyncio.sleep(0)
    assert bytes(got) == payload


async def test_closing_the_transport_closes_its_connections() -> None:
    async def never(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(10)
        return False

    transport = Transport()
    async with server(never) as (url, _):
        http = httpx.AsyncClient(transport=transport)
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            assert transport.connections == 1
            await http.aclose()
            await asyncio.sleep(0.01)
            assert transport.connections == 0


def delta(seq: int) -> bytes:
    chunk = {"message_type": "assistant_message", "id": "m", "run_id": "run-1", "content": f"{seq};"}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def test_a_stream_pushes_its_messages_and_a_slow_sink_pauses_the_connection() -> None:
    """Letta's stream through the transport is read by the connection's callbacks (``pushes``), not by a
    task; a sink that takes one item at a time slowly pauses the connection, and nothing is lost."""
    count = 400
    frames = [delta(seq) for seq in range(count)] + [b"data: [DONE]\n\n"]

    async def stream(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for frame in frames:
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    transport = Transport()
    async with server(stream) as (url, per_connection):
        letta = AsyncLetta(base_url=url, max_retries=0, http_client=httpx.AsyncClient(transport=transport))
        try:
            for _ in range(2):  # the second turn reuses the connection the first one read to its end
                raw = await open_raw_stream(letta, "agent-1", input="hi")
                assert isinstance(raw, RawLettaStream)
                assert raw.pushes
                turn = LettaTurn(letta, "agent-1", raw)
                pauses = observe_pauses(raw)
                send, recv = anyio.create_memory_object_stream[Any](1)
                got: list[str] = []

                async def slow(recv: Any = recv, got: list[str] = got) -> None:
                    async with recv:
                        async for message in recv:
                            got.extend(e.content for e in LettaMapper().feed(message))
                            await asyncio.sleep(0.0005)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(slow)
                    await letta_source(turn, send)
                assert got == [f"{seq};" for seq in range(count)]
                assert turn.run_id == "run-1"
                assert pauses[0] > 0
        finally:
            await letta.close()
    assert per_connection == [2]


def observe_pauses(raw: RawLettaStream) -> list[int]:
    """Count the stream's pauses (the body's, under whatever wraps it)."""
    counted = [0]
    pause = raw.pause

    def counting() -> None:
        counted[0] += 1
        pause()

    raw.pause = counting  # type: ignore[method-assign]
    return counted


async def test_a_turn_runner_over_a_pushing_stream_records_its_run_and_hands_out_every_frame() -> None:
    """The run is named in the connection's callback, where no task can be started: the runner still
    records it (``Started``), and the answer reaches the live client whole."""
    count = 50
    frames = [delta(seq) for seq in range(count)]
    frames += [b'data: {"message_type": "stop_reason", "stop_reason": "end_turn", "run_id": "run-1"}\n\n']
    frames += [b"data: [DONE]\n\n"]

    async def stream(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # the first chunk comes after the runner started: to a callback, not the task
        for frame in frames:
            writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    # as under hypercorn: the loop's callbacks do not run in a context that names the async library (anyio's
    # pytest runner sets sniffio's variable; a callback that starts a task would pass here and fail there)
    unnamed = sniffio.current_async_library_cvar.set(None)
    try:
        await _run_one_turn(count, stream)
    finally:
        sniffio.current_async_library_cvar.reset(unnamed)


async def _run_one_turn(count: int, stream: Answer) -> None:
    store = MemoryStore()
    host = TurnHost(store, _Canceller(), grace=30.0)  # type: ignore[arg-type]
    recorded: list[str | None] = []
    await host.apply(AGENT, Claim(TURN, host.owner, "conn-1", 10.0))
    async with server(stream) as (url, _):
        letta = AsyncLetta(base_url=url, max_retries=0, http_client=httpx.AsyncClient(transport=Transport()))
        try:
            turn = await start_turn(letta, AGENT, "hi")
            assert turn.pushing() is not None
            send, recv = create_handoff(1)
            runner = TurnRunner(host, store, turn, TURN, LettaMapper(), send)
            data = b""
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run)
                with recv:
                    while True:
                        try:
                            data += b"".join(f.data for batch in recv.receive_nowait() for f in batch)
                            if data.count(b";") >= count // 2 and not recorded:  # mid-answer: the record names the run
                                record = await store.record(AGENT)
                                recorded.append(record.run_id if record is not None else None)
                        except anyio.WouldBlock:
                            await recv.wait()
                        except anyio.EndOfStream:
                            break
        finally:
            await letta.close()
    assert recorded == ["run-1"]
    assert await store.record(AGENT) is None  # finished and released
    events = [e for sse in SSEParser().feed(data) if (e := parse_event(sse.data)) is not None]
    assert "".join(e.content for e in events if isinstance(e, Text)) == "".join(f"{seq};" for seq in range(count))
    assert isinstance(events[-1], Done)


async def test_a_request_the_server_does_not_read_is_a_write_timeout() -> None:
    ready = asyncio.Event()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ready.set()
        await asyncio.sleep(5)  # reads nothing: the request's bytes fill the socket buffers
        writer.close()

    srv = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        async with httpx.AsyncClient(transport=Transport(), timeout=httpx.Timeout(5.0, write=0.2)) as http:
            with pytest.raises(httpx.WriteTimeout):
                await http.post(url, content=b"x" * (64 << 20))
    finally:
        srv.close()
        await srv.wait_closed()


async def test_the_http_response_let_go_at_the_start_is_freed_at_once() -> None:
    """A raw stream keeps only the transport's body; httpx's response (with its request and headers),
    which httpx's body wrapper refers back to, is freed by reference counting right away — not left in a
    cycle for the collector, one per turn."""

    async def stream(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        frames = delta(0) + b"data: [DONE]\n\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(frames))
        writer.write(frames)
        await writer.drain()
        return True

    async with server(stream) as (url, _):
        letta = AsyncLetta(base_url=url, max_retries=0, http_client=httpx.AsyncClient(transport=Transport()))
        try:
            with collector_held():
                raw = await open_raw_stream(letta, "agent-1", input="hi")
                left = alive(httpx.Response)
                got = [message async for message in raw]
                await raw.close()
        finally:
            await letta.close()
    assert [m["content"] for m in got] == ["0;"]
    assert left == []
