"""The contract suite's fixtures: every test runs on MemoryStore and on RedisStore, under asyncio and trio.

One real ``redis-server`` (Debian's, installed by :mod:`devstack.redis_server` if missing)
serves the whole session on a free loopback port; a start failure FAILS the Redis tests.
Each test gets its own key prefix, and after each Redis test every key left under it
must still have an expiry ("no key without an end").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import coredis
import pytest

from app.store import TurnStore
from app.store.memory import MemoryStore
from app.store.redis import RedisStore
from devstack.redis_server import RedisServer, StackError, start_redis

StoreFactory = Callable[..., Awaitable[TurnStore]]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    root: Path = tmp_path_factory.mktemp("redis")
    try:
        server = start_redis(root / "data", root / "redis.log")
    except StackError as exc:
        pytest.fail(f"redis-server did not start:\n{exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    """The session Redis's URL when this test runs on Redis (to look at the keys a store wrote)."""
    if kind != "redis":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


async def keys_without_end(raw: coredis.Redis[bytes], prefix: str) -> dict[bytes, int]:
    """Keys under ``prefix`` and their PTTL, for those that would never expire (PTTL -1)."""
    found: dict[bytes, int] = {}
    async for key in raw.scan_iter(match=f"{prefix}*"):
        ttl = await raw.pttl(key)
        if ttl < 0 and await raw.exists([key]):
            found[key] = ttl
    return found


@pytest.fixture
async def make_store(kind: str, prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """``await make_store(**options)``: a store of this test's kind (options: max_frames, margin, ...).

    Redis stores share this test's prefix, so two of them act as two processes on one
    Redis; memory stores are one process, so every call returns the same store there.
    """
    made: list[TurnStore] = []
    memory: dict[str, MemoryStore] = {}

    async def make(**options: Any) -> TurnStore:
        if kind == "memory":
            if "store" not in memory:
                memory["store"] = MemoryStore(**options)
            return memory["store"]
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisStore.from_url(server.url, prefix=prefix, **options)
        made.append(store)
        return store

    yield make
    for store in made + list(memory.values()):
        await store.aclose()
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        async with coredis.Redis.from_url(server.url, decode_responses=False) as raw:
            left = await keys_without_end(raw, prefix)
        assert not left, f"keys without an expiry: {left}"


@pytest.fixture
async def store(make_store: StoreFactory) -> TurnStore:
    return await make_store()
