"""The HTTP transports under the service's Letta clients, and the one ``LETTA_HTTP`` picks.

letta-client talks httpx; by default httpx's own transport (httpcore, pure Python) reads
every chunk of every stream.  Measured reading 300 streams of 40 deltas/s from the bench's
emulator: 103 µs of CPU per delta through httpcore, 37 µs through aiohttp (its parser is C),
behind the same httpx interface.  The service's default, ``httptools``, goes further: the
connections are asyncio protocols that hand a stream's bytes to the pipeline from
``data_received`` (:mod:`app.letta_protocol`).  ``aiohttp`` (through ``httpx-aiohttp``, the
transport letta-client itself ships as its ``aiohttp`` extra) and ``httpx`` remain choices.

:class:`LettaTransport` is that transport with the failures named as httpx would name
them: httpx-aiohttp reports a refused connection and a server that hung up as
``ConnectTimeout``, which letta-client would turn into "timed out".  asyncio only (aiohttp);
the pipeline's stages, which also run under trio, never see it.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from pipeline.letta_raw import BODY_EXTENSION

from .letta_protocol import Transport
from .settings import LETTA_HTTP_KINDS

TELEMETRY_HEADERS = frozenset(
    f"x-stainless-{name}"
    for name in ("lang", "os", "arch", "runtime", "runtime-version", "async", "retry-count", "read-timeout")
)
"""letta-client's telemetry headers that Letta 0.16.8 only traces, if at all.  Not sent: aiohttp keeps a
request's headers for as long as its response is open (a stream: the whole turn).  The SDK's version
(``X-Stainless-Package-Version``) and ``User-Agent`` are sent: Letta picks its answer's format by them."""


def _renamed(exc: BaseException) -> BaseException:
    """aiohttp's ``exc`` as httpx's own transport would have raised it (``exc`` itself if it is not aiohttp's)."""
    if isinstance(exc, aiohttp.ServerTimeoutError):  # sock_read (and sock_connect, as ConnectionTimeoutError)
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return httpx.ConnectTimeout(str(exc) or "timed out connecting")
        return httpx.ReadTimeout(str(exc) or "timed out reading")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc) or "connection refused")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(exc) or "server disconnected")
    if isinstance(exc, aiohttp.ClientResponseError):  # not HTTP/1.1 as aiohttp parses it
        return httpx.RemoteProtocolError(str(exc))
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(str(exc))
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, aiohttp.ClientError)):
        return httpx.ReadError(str(exc) or type(exc).__name__)
    if isinstance(exc, TimeoutError):  # aiohttp's `connect` timeout: waiting for a connection of its pool
        return httpx.PoolTimeout(str(exc) or "no connection became free in time")
    return exc


class _Body(httpx.AsyncByteStream):
    """An aiohttp response's body as httpx reads it: whatever arrived, as it arrives (one layer per chunk).

    Failures while reading are renamed as :class:`LettaTransport` renames them.  ``aclose``
    releases the response (its connection goes back to aiohttp's pool, or is closed).
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self):  # type: ignore[no-untyped-def]  # an async generator: AsyncIterator[bytes]
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _renamed(exc) from exc

    async def aclose(self) -> None:
        self._response.release()


class LettaTransport(AiohttpTransport):
    """httpx's transport interface over aiohttp (httpx-aiohttp's pool), failures named as httpx names them.

    The request goes out as httpx-aiohttp sends it (same timeouts: ``connect`` → aiohttp's
    socket connect, ``read`` → its socket read, ``pool`` → waiting for a pooled connection),
    through aiohttp's public API only; the body is one layer over aiohttp's reader, also handed
    over as the response's ``BODY_EXTENSION`` so that a long stream need not keep httpx's models.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        timeout = request.extensions.get("timeout", {})
        data: bytes | httpx.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream  # type: ignore[assignment]
            request.headers.pop("transfer-encoding", None)  # aiohttp chunks it itself
        try:
            response = await self.client.request(
                request.method,
                str(request.url),
                headers=[(k, v) for k, v in request.headers.multi_items() if k not in TELEMETRY_HEADERS],
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"), sock_read=timeout.get("read"), connect=timeout.get("pool")
                ),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _renamed(exc) from exc
        body = _Body(response)
        extensions: dict[str, object] = {"http_version": b"HTTP/1.1", BODY_EXTENSION: body}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=body,
            request=request,
            extensions=extensions,
        )


def transport(kind: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport ``LETTA_HTTP`` names, with ``limits`` as its pool."""
    if kind == "httptools":
        return Transport(max_keepalive=limits.max_keepalive_connections or 100)
    if kind == "aiohttp":
        return LettaTransport(limits=limits)
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    raise ValueError(f"LETTA_HTTP must be one of {', '.join(LETTA_HTTP_KINDS)}, not {kind!r}")
