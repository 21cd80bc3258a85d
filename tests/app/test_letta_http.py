"""The transports under the Letta clients (``app/letta_protocol.py``, ``app/letta_http.py``), against real sockets.

Each failure must reach letta-client and the pipeline under the name httpx's own
transport gives it (a refused connection is not a timeout), and a stream must arrive
chunk by chunk as it is written — whichever transport ``LETTA_HTTP`` picks.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from letta_client import APIConnectionError, APIStatusError, APITimeoutError, AsyncLetta

from app.letta_http import LettaTransport, transport
from app.letta_protocol import Transport
from app.settings import Settings, SettingsError, settings_from_env
from app.upstream import PoolGate, make_client
from devstack._proc import free_port
from pipeline.letta_raw import open_raw_stream

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """A raw HTTP server on loopback that answers every connection with ``handler``."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer)
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        await srv.wait_closed()


KINDS = ("httptools", "aiohttp")
"""The transports that must keep httpx's contract (``httpx`` is httpx's own)."""


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client(kind: str = "aiohttp", timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport(kind, httpx.Limits(max_connections=4)), timeout=timeout)


async def test_a_refused_connection_is_a_connect_error_not_a_timeout(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with client(kind) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url + "/v1/health/")
    letta = AsyncLetta(base_url=url, max_retries=0, http_client=client(kind))
    try:
        with pytest.raises(APIConnectionError) as caught:
            await letta.agents.list()
        assert not isinstance(caught.value, APITimeoutError)
    finally:
        await letta.close()


async def test_a_server_that_hangs_up_before_answering_is_a_protocol_error(kind: str) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return

    async with server(hang_up) as url, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(url + "/")


async def test_a_stream_cut_mid_body_is_a_transport_error_raised_while_reading(kind: str) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"8\r\ndata: 1\n\r\n")
        await writer.drain()

    async with server(cut) as url, client(kind) as http, http.stream("GET", url + "/") as response:
        assert response.status_code == 200
        got: list[bytes] = []

        async def read_all() -> None:
            async for chunk in response.aiter_raw():
                got.append(chunk)

        with pytest.raises(httpx.TransportError) as caught:
            await read_all()
        assert not isinstance(caught.value, httpx.ConnectTimeout)
        assert b"".join(got) == b"data: 1\n"


async def test_a_response_that_is_not_http_is_a_protocol_error(kind: str) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nnot a chunk size\r\n")
        await writer.drain()

    async def read_all(http: httpx.AsyncClient, url: str) -> None:
        async with http.stream("GET", url + "/") as response:
            async for _ in response.aiter_raw():
                pass

    async with server(garbage) as url, client(kind) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await read_all(http, url)


async def test_chunks_arrive_as_they_are_written_and_silence_is_a_read_timeout(kind: str) -> None:
    written = asyncio.Event()
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nfirst\n\r\n")
        await writer.drain()
        written.set()
        await release.wait()

    async with server(slow) as url, client(kind, timeout=0.5) as http, http.stream("GET", url + "/") as response:
        chunks = response.aiter_raw()
        assert await chunks.__anext__() == b"first\n"  # before the server writes anything more
        assert written.is_set()
        with pytest.raises(httpx.ReadTimeout):
            await chunks.__anext__()
        release.set()


def test_the_setting_picks_the_transport_and_a_bad_value_names_the_variable() -> None:
    limits = httpx.Limits(max_connections=2)
    assert isinstance(transport("httptools", limits), Transport)
    assert isinstance(transport("aiohttp", limits), LettaTransport)
    assert type(transport("httpx", limits)) is httpx.AsyncHTTPTransport
    assert settings_from_env({"SERVICE_AUTH": "off"}).letta_http == "httptools"
    assert settings_from_env({"SERVICE_AUTH": "off", "LETTA_HTTP": "httpx"}).letta_http == "httpx"
    with pytest.raises(SettingsError, match="LETTA_HTTP='curl'"):
        settings_from_env({"SERVICE_AUTH": "off", "LETTA_HTTP": "curl"})


async def test_the_service_client_reads_through_the_gate_and_the_chosen_transport(kind: str) -> None:
    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]")
        await writer.drain()

    async with server(ok) as url:
        letta = make_client(Settings(letta_base_url=url, letta_http=kind), max_connections=2)
        try:
            gate = letta._client._transport  # the http client letta-client was given
            assert isinstance(gate, PoolGate)
            assert isinstance(gate._inner, {"httptools": Transport, "aiohttp": LettaTransport}[kind])
            assert await letta.agents.list() is not None
        finally:
            await letta.close()


async def test_an_open_letta_stream_keeps_only_the_body_not_httpx_models(kind: str) -> None:
    """A stream open for minutes holds the transport's body only: httpx's response and its request
    (headers, the JSON body) are let go once it opens, and an ``event: error`` still names the status."""
    go_on = asyncio.Event()

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-request-id: req-7\r\n\r\n")
        writer.write(b'data: {"message_type": "assistant_message", "content": "a"}\n\n')
        await writer.drain()
        await go_on.wait()
        writer.write(b'event: error\ndata: {"error": "model exploded"}\n\n')
        await writer.drain()

    seen: list[weakref.ref[httpx.Response]] = []

    async def keep(response: httpx.Response) -> None:
        seen.append(weakref.ref(response))

    async with server(sse) as url:
        http = httpx.AsyncClient(
            transport=transport(kind, httpx.Limits(max_connections=2)), event_hooks={"response": [keep]}
        )
        letta = AsyncLetta(base_url=url, http_client=http, max_retries=0)
        try:
            stream = await open_raw_stream(letta, "agent-1", messages=[{"role": "user", "content": "hi"}])
            messages = stream.__aiter__()
            assert (await messages.__anext__())["content"] == "a"
            gc.collect()
            assert len(seen) == 1
            assert seen[0]() is None  # nothing of the stream refers to httpx's response any more
            go_on.set()
            with pytest.raises(APIStatusError) as raised:
                await messages.__anext__()
            assert raised.value.status_code == 200
            assert raised.value.response.headers["x-request-id"] == "req-7"
            assert raised.value.request.url.path == "/v1/agents/agent-1/messages"
            await stream.close()
        finally:
            await letta.close()


async def test_letta_gets_the_sdk_version_and_user_agent_but_not_the_telemetry_headers() -> None:
    """Letta picks its answer's format by the SDK's version; the rest of letta-client's ``X-Stainless-*``
    headers would only sit in aiohttp's copy of the request for as long as a stream is open."""
    received: list[bytes] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    letta = AsyncLetta(base_url=url, http_client=client(), max_retries=0, default_headers={"X-Custom": "kept"})
    try:
        await letta.agents.list()
    finally:
        await letta.close()
        srv.close()
        await srv.wait_closed()
    names = {line.split(b":", 1)[0].strip().lower() for line in received[0].split(b"\r\n")[1:] if b":" in line}
    assert {b"x-stainless-package-version", b"user-agent", b"x-custom", b"accept"} <= names
    assert not {n for n in names if n.startswith(b"x-stainless-") and n != b"x-stainless-package-version"}
