"""Talking to Letta: the client, and Letta's failures as our HTTP errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
import httpx
from letta_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncLetta,
    NotFoundError,
)

from pipeline.letta_raw import BODY_EXTENSION, PushBody

from .errors import ApiError, NotFound, UpstreamError, UpstreamUnavailable
from .letta_http import transport
from .settings import Settings


class PoolGate(httpx.AsyncBaseTransport):
    """At most ``slots`` requests inside the connection pool at once; the others wait here.

    httpcore 1.0.9 loses a pool slot for good when a request is cancelled right after the
    pool handed it a new connection (encode/httpcore#1093): a burst of students leaving
    while others wait for a connection wedges the pool until the process restarts.  With
    as many slots here as the pool has connections, no request ever waits inside httpcore,
    and a request cancelled while it waits here simply leaves the queue.  A slot is held
    until the response is closed; the wait is bounded by the request's pool timeout.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, slots: int) -> None:
        self._inner = inner
        self._slots = anyio.Semaphore(slots)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("pool")
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as waited:
            await self._slots.acquire()
        if waited.cancelled_caught:
            raise httpx.PoolTimeout("no connection to the agent server became free in time", request=request)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self._slots.release()
            raise
        releasing = _ReleasingPush if isinstance(response.stream, PushBody) else _Releasing
        response.stream = releasing(response.stream, self._slots.release)
        if BODY_EXTENSION in response.extensions:  # the body handed over must release the slot too
            response.extensions[BODY_EXTENSION] = response.stream
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Releasing(httpx.AsyncByteStream):
    """A response body that gives its slot back once, when it is closed."""

    def __init__(self, inner: Any, release: Any) -> None:
        self._inner = inner
        self._release = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._inner.__aiter__()  # type: ignore[no-any-return]  # no layer of our own per chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _ReleasingPush(_Releasing):
    """A :class:`_Releasing` body over a :class:`~pipeline.letta_raw.PushBody`, which it still is."""

    def push(self, on_data: Callable[[bytes], object], on_end: Callable[[BaseException | None], object]) -> None:
        self._inner.push(on_data, on_end)

    def pause(self) -> None:
        self._inner.pause()

    def resume(self) -> None:
        self._inner.resume()


def make_client(settings: Settings, *, max_connections: int | None = None) -> AsyncLetta:
    """An ``AsyncLetta`` for the configured server.  No retries: a stream must not be sent twice.

    Every open stream holds one connection, so the pool must be as large as the number of
    streams the service may hold (letta-client's default of 100 would leave the 101st
    stream waiting, headers unsent, for the pool timeout).  Requests beyond it wait in a
    :class:`PoolGate` in front of the pool, never inside it.
    """
    limit = max_connections if max_connections is not None else settings.letta_max_connections
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=min(limit, 100))
    return AsyncLetta(
        base_url=settings.letta_base_url,
        api_key=settings.letta_api_key,
        timeout=httpx.Timeout(settings.letta_timeout, connect=5.0),
        max_retries=0,
        http_client=httpx.AsyncClient(
            transport=PoolGate(transport(settings.letta_http, limits), limit),
            timeout=httpx.Timeout(settings.letta_timeout, connect=5.0),
        ),
    )


@attrs.frozen
class LettaClients:
    """The service's clients: CRUD calls, control calls (cancels, health), and the stream pools."""

    crud: AsyncLetta
    control: AsyncLetta
    streams: list[AsyncLetta]

    @classmethod
    def single(cls, client: AsyncLetta) -> LettaClients:
        """One given client in every role (tests, benchmarks)."""
        return cls(client, client, [client])

    def owned(self) -> list[AsyncLetta]:
        return [self.crud, self.control, *self.streams]


def make_clients(settings: Settings) -> LettaClients:
    """Small pools for CRUD and control; the stream connections spread over ``letta_pool_shards`` pools."""
    shards = settings.letta_pool_shards
    per_shard = -(-settings.letta_max_connections // shards)
    return LettaClients(
        crud=make_client(settings, max_connections=64),
        control=make_client(settings, max_connections=settings.letta_control_connections),
        streams=[make_client(settings, max_connections=per_shard) for _ in range(shards)],
    )


def translate(exc: Exception, what: str = "agent") -> ApiError:
    """Letta's exception as the error this service answers with."""
    if isinstance(exc, NotFoundError):
        return NotFound(f"{what} not found")
    if isinstance(exc, APITimeoutError):
        return UpstreamUnavailable("the agent server timed out")
    if isinstance(exc, APIConnectionError):
        return UpstreamUnavailable("the agent server cannot be reached")
    if isinstance(exc, APIStatusError):
        return UpstreamError(f"the agent server answered {exc.status_code}", detail=exc.message)
    return UpstreamError(f"the agent server failed: {type(exc).__name__}")


@asynccontextmanager
async def letta_errors(what: str = "agent") -> AsyncIterator[None]:
    """Raise Letta's failures inside the block as :class:`ApiError`."""
    try:
        yield
    except (APIStatusError, APIConnectionError, httpx.HTTPError) as exc:
        raise translate(exc, what) from exc
