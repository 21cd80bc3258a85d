"""Letta's HTTP/1.1 connections as asyncio protocols: a streamed token reaches the pipeline without a task step.

Every other transport hands a response body to a task that reads it: each chunk Letta writes (one per
token) wakes that task, which steps through the body's generators — the transport's, the SDK's, ours —
down to the parser.  Here a connection is an :class:`asyncio.Protocol` whose bytes are parsed by
``httptools`` (llhttp, the C parser uvicorn serves with); a consumer that asks for it
(:meth:`Body.push`, which :class:`pipeline.letta_raw.RawLettaStream` uses) gets the body's bytes from
``data_received`` itself, so a token is parsed, mapped and throttled in the loop's callback.  Any other
consumer iterates the body as it would any httpx body.  Measured reading 300 emulator streams of 40
deltas/s in one process (parser, orjson and mapping included): 59 µs of CPU per delta through aiohttp
and the SDK's streaming response, 40 µs through this transport.

It is an ``httpx`` transport, so letta-client sends every request through it unchanged (URL, auth,
headers, timeouts, error mapping), and failures are named as httpx's own transport names them
(``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``,
``WriteError``, ``WriteTimeout``).  Connections are kept for the next request while the server allows
it (HTTP/1.1 keep-alive): at most ``max_keepalive`` idle ones per origin, each for ``keepalive_expiry``
seconds (below the 5 s after which uvicorn, which serves Letta, closes an idle connection).  How many
are open at once is bounded in front of it (:class:`app.upstream.PoolGate`).

Ownership: the transport owns every connection (:meth:`Transport.aclose` closes them all); while a
response is read its :class:`Body` holds the connection, and closing the body gives it back (kept when
the response was read to its end and the server keeps the connection, closed otherwise).  asyncio only;
the pipeline's stages, which also run under trio, only see :class:`~pipeline.letta_raw.PushBody`.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import cast

import httptools
import httpx

from pipeline.letta_raw import BODY_EXTENSION

Origin = tuple[bytes, str, int]
"""Scheme, host and port: the connections that can serve a request."""

HIGH_WATER = 1 << 20
"""Bytes a body that is iterated may hold before the connection stops reading (backpressure)."""

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_NO_SEND = frozenset({b"content-length", b"transfer-encoding"})


class Body(httpx.AsyncByteStream):
    """A response's body: iterated (``async for``), or pushed to a consumer (:meth:`push`), never both.

    Closing it (:meth:`aclose`) gives the connection back; after that nothing is delivered any more.
    """

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_data: Callable[[bytes], object] | None = None
        self._on_end: Callable[[BaseException | None], object] | None = None
        self._closed = False

    # ------------------------------------------------------------ the connection's side

    def _data(self, chunk: bytes) -> None:
        if self._closed:
            return
        if self._on_data is not None:
            self._on_data(chunk)
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended, self._error = True, error
        if self._on_end is not None:
            on_end, self._on_end, self._on_data = self._on_end, None, None
            on_end(error)
        else:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ the consumer's side

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= HIGH_WATER // 4:
                    self._conn.resume_reading()
                yield chunk
            elif self._ended:
                if self._error is not None:
                    raise self._error
                return
            else:
                self._waiter = self._conn.loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    def push(self, on_data: Callable[[bytes], object], on_end: Callable[[BaseException | None], object]) -> None:
        """From now on call ``on_data`` with every chunk as it arrives (what came already first, now), then
        ``on_end`` once (``None``, or the failure that ended the body, as iterating would raise it).  The
        callbacks run in the loop's callbacks and must not raise; :meth:`pause` holds the chunks back."""
        chunks, self._chunks, self._buffered = self._chunks, deque(), 0
        self._on_data = on_data
        for chunk in chunks:
            on_data(chunk)
        self._conn.resume_reading()
        if self._ended:
            self._on_end, self._on_data = None, None
            on_end(self._error)
        else:
            self._on_end = on_end

    def pause(self) -> None:
        """Deliver nothing until :meth:`resume` (the connection stops reading: TCP's flow control)."""
        self._conn.pause_reading()

    def resume(self) -> None:
        self._conn.resume_reading()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_data = self._on_end = None
        self._chunks.clear()
        self._conn.release(reusable=self._ended and self._error is None)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one exchange at a time; its transport's while idle, its body's while read."""

    __slots__ = (
        "_body",
        "_complete",
        "_framed",
        "_head",
        "_head_only",
        "_headers",
        "_keep",
        "_last",
        "_parser",
        "_paused",
        "_pool",
        "_read_timeout",
        "_reason",
        "_timer",
        "_transport",
        "_writable",
        "closed",
        "idle_since",
        "loop",
        "origin",
    )

    def __init__(self, pool: Transport, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.origin = origin
        self.loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._body: Body | None = None
        self._complete = False
        self._keep = False
        self._framed = True  # a length or chunks say where the body ends; else the connection's end does
        self._head_only = False
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self._read_timeout = math.inf
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ one exchange

    async def exchange(self, data: bytes, head_only: bool, timeouts: dict[str, float | None]) -> httpx.Response:
        """Write a request (``data``: its head and body) and return the response once its head arrived."""
        assert self._transport is not None
        assert self._head is None
        assert self._body is None
        self._head = self.loop.create_future()
        self._headers, self._reason, self._complete, self._keep, self._framed = [], b"", False, False, True
        self._head_only = head_only
        read = timeouts.get("read")
        self._read_timeout = math.inf if read is None else read
        self._transport.write(data)
        if self._writable is not None:
            await self._drained(timeouts.get("write"))
        self._last = self.loop.time()
        self._arm(self._last + self._read_timeout)
        status, headers, reason = await self._head
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1", BODY_EXTENSION: self._body}
        if reason:
            extensions["reason_phrase"] = reason
        return httpx.Response(status, headers=headers, stream=self._body, extensions=extensions)

    async def _drained(self, within: float | None) -> None:
        assert self._writable is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._writable), within)
        except TimeoutError:
            raise httpx.WriteTimeout("timed out writing the request") from None

    def release(self, reusable: bool) -> None:
        """The body is done with: keep the connection for the next request if it can serve one, else close it."""
        self._body, self._head = None, None
        self._disarm()
        if reusable and self._complete and self._keep and not self._head_only and not self.closed:
            self.resume_reading()
            self._pool.keep(self)
        else:
            self.close()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
        self.closed = True

    def pause_reading(self) -> None:
        if not self._paused and self._transport is not None and not self.closed:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._last = self.loop.time()  # the server is not late while we do not read
            self._transport.resume_reading()

    # ------------------------------------------------------------ the read timeout: one lazy loop timer

    def _arm(self, when: float) -> None:
        self._disarm()
        if when != math.inf:
            self._timer = self.loop.call_at(when, self._tick)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        if self.closed or self._complete or (self._head is None and self._body is None):
            return
        now = self.loop.time()
        if self._paused:
            self._arm(now + self._read_timeout)
        elif now - self._last >= self._read_timeout:
            self._fail(httpx.ReadTimeout("timed out reading the response"))
        else:
            self._arm(self._last + self._read_timeout)

    def _fail(self, error: BaseException) -> None:
        """End the exchange with ``error`` (raised to whoever waits for the head or reads the body); close."""
        head, body = self._head, self._body
        if head is not None and not head.done():
            head.set_exception(error)
        elif body is not None:
            body._end(error)
        self.close()

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are no asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self._last = self.loop.time()
        if self._head is None:  # bytes while idle: no exchange of ours is under way
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
            self._fail(cause if cause is not None else httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool:
        return False  # the connection closes (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._disarm()
        self._pool.forget(self)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        head, body = self._head, self._body
        if head is not None and not head.done():
            if exc is None:
                head.set_exception(httpx.RemoteProtocolError("Server disconnected without sending a response."))
            else:
                head.set_exception(httpx.ReadError(str(exc) or type(exc).__name__))
        elif body is not None and not self._complete:
            if exc is None and not self._framed:  # a body that ends with its connection ended as it should
                self._complete = True
                body._end(None)
            elif exc is None:
                body._end(httpx.RemoteProtocolError("peer closed connection without sending complete message body"))
            else:
                body._end(httpx.ReadError(str(exc) or type(exc).__name__))

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # ------------------------------------------------------------ httptools' callbacks

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim response (103 Early Hints): the real one follows
            return
        names = {name.lower() for name, _ in self._headers}
        self._framed = b"content-length" in names or b"transfer-encoding" in names or status in (204, 304)
        self._body = body = Body(self)
        assert self._head is not None
        self._head.set_result((status, self._headers, self._reason))
        if self._head_only:  # no body follows a HEAD's head; the parser cannot be told, so the connection goes
            self._complete = True
            body._end(None)

    def on_body(self, body: bytes) -> None:
        if self._body is not None and not self._head_only:
            self._body._data(body)

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            self._headers, self._reason = [], b""
            return
        self._complete = True
        self._keep = self._parser.should_keep_alive()
        self._disarm()
        if self._body is not None:
            self._body._end(None)


class Transport(httpx.AsyncBaseTransport):
    """httpx's transport interface over :class:`_Connection` protocols, with keep-alive connections."""

    def __init__(self, *, max_keepalive: int = 100, keepalive_expiry: float = 4.0) -> None:
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._idle: dict[Origin, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.raw_scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"the Letta transport speaks http and https, not {url.scheme!r}")
        origin: Origin = (url.raw_scheme, url.host, url.port or _DEFAULT_PORTS[url.raw_scheme])
        timeout = request.extensions.get("timeout", {})
        content = await request.aread()
        conn = self._idle_connection(origin) or await self._connect(origin, request, timeout.get("connect"))
        try:
            return await conn.exchange(_request_bytes(request, content), request.method == "HEAD", timeout)
        except BaseException:
            conn.close()
            raise

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._expiry:
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, request: httpx.Request, within: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        secure = scheme == b"https"
        if secure and self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        sni = request.extensions.get("sni_hostname") or host if secure else None
        try:
            async with asyncio.timeout(within):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin, loop),
                    host,
                    port,
                    ssl=self._ssl if secure else None,
                    server_hostname=sni,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:  # refused, unreachable, a name that does not resolve, TLS failures
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._all.add(conn)
        return conn

    def keep(self, conn: _Connection) -> None:
        """``conn`` can serve another request: keep it (or close it: enough are kept already)."""
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self._max_keepalive:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed."""
        self._all.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    @property
    def connections(self) -> int:
        """Connections open now (idle or in use)."""
        return len(self._all)

    async def aclose(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()


def _request_bytes(request: httpx.Request, content: bytes) -> bytes:
    """The request as it goes on the wire: its line, its headers (the length of ``content`` as its length), body."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines.extend(b"%s: %s" % (name, value) for name, value in request.headers.raw if name.lower() not in _NO_SEND)
    if content or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(content))
    return b"\r\n".join(lines) + b"\r\n\r\n" + content
