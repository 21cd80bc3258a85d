"""The HTTP transport under the service's Letta clients.

letta-client talks httpx; by default httpx's own transport (httpcore, pure Python) reads
every chunk of every stream.  Measured reading 300 streams of 40 deltas/s from the bench's
emulator on this machine: 103 µs of CPU per delta through httpcore, 37 µs through
aiohttp (its parser is C), behind the same httpx interface.  So the service uses
``aiohttp`` through ``httpx-aiohttp`` — the transport letta-client itself ships as its
``aiohttp`` extra (``DefaultAioHttpClient``) — unless ``LETTA_HTTP=httpx``.

:class:`LettaTransport` is that transport with the failures named as httpx would name
them: httpx-aiohttp reports a refused connection and a server that hung up as
``ConnectTimeout``, which letta-client would turn into "timed out".  asyncio only (aiohttp);
the pipeline's stages, which also run under trio, never see it.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from .settings import LETTA_HTTP_KINDS


def _renamed(exc: Exception) -> Exception:
    """``exc`` as httpx's own transport would have raised it.

    ``exc`` is httpx-aiohttp's ``ConnectTimeout`` (its cause is aiohttp's exception), or an
    aiohttp error it does not map at all (a response that breaks HTTP/1.1)."""
    cause = exc.__cause__ if isinstance(exc, httpx.ConnectTimeout) else exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause) or "connection refused")
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(cause) or "server disconnected")
    if isinstance(cause, aiohttp.ClientResponseError):  # not HTTP/1.1 as aiohttp parses it
        return httpx.RemoteProtocolError(str(cause))
    if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, aiohttp.ServerTimeoutError):
        return httpx.ReadError(str(cause) or type(cause).__name__)
    return exc


_RENAMED = (httpx.ConnectTimeout, aiohttp.ClientError)


class _Stream(httpx.AsyncByteStream):
    """A response body whose failures are renamed like :class:`LettaTransport`'s."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self):  # type: ignore[no-untyped-def]  # an async generator: AsyncIterator[bytes]
        try:
            async for chunk in self._inner:
                yield chunk
        except _RENAMED as exc:
            raise _renamed(exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class LettaTransport(AiohttpTransport):
    """httpx-aiohttp's transport, failures named as httpx's own transport names them."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except _RENAMED as exc:
            raise _renamed(exc) from exc
        response.stream = _Stream(response.stream)  # type: ignore[arg-type]
        return response


def transport(kind: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport ``LETTA_HTTP`` names, with ``limits`` as its pool."""
    if kind == "aiohttp":
        return LettaTransport(limits=limits)
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    raise ValueError(f"LETTA_HTTP must be one of {', '.join(LETTA_HTTP_KINDS)}, not {kind!r}")
