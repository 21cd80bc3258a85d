"""What only the Redis store has: a server that restarts, bounded pools, its own client task, key expiry of locks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import coredis
import pytest

from app.store import LogFrame, LogMeta
from app.store.redis import RedisStore
from app.turn_machine import Claim, Renew
from devstack.redis_server import RedisServer, StackError, ensure_redis_server

pytestmark = pytest.mark.anyio


def _prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and start again."""
    try:
        server = RedisServer(ensure_redis_server(tmp_path / "install.log"), tmp_path / "data", tmp_path / "redis.log")
        server.start()
    except StackError as exc:
        pytest.fail(f"redis-server did not start:\n{exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


async def test_a_restarted_redis_is_used_again_on_the_next_call(own_redis: RedisServer) -> None:
    store = RedisStore.from_url(own_redis.url, prefix=_prefix(), timeout=2.0)
    try:
        await store.apply("agent", Claim("t1", "p1", "r1", 30.0), grace=5.0)
        await store.log_open(LogMeta("t1", "agent"), ttl=60)
        own_redis.stop()
        with pytest.raises((coredis.exceptions.ConnectionError, TimeoutError)):
            await store.record("agent")
        own_redis.start()  # same port; nothing was persisted, and the scripts are gone too
        with anyio.fail_after(5):
            assert await store.record("agent") is None
            assert (await store.apply("agent", Claim("t2", "p1", "r1", 30.0), grace=5.0)).effects == ()
            await store.log_open(LogMeta("t2", "agent"), ttl=60)
            await store.log_append("t2", [LogFrame(1, b"again")])
            assert await store.log_read("t2", 0) == [LogFrame(1, b"again")]
    finally:
        await store.aclose()


async def test_more_concurrent_applies_than_connections(redis_server: RedisServer) -> None:
    """Applies share connections: many at once on a pool of two neither deadlock nor fail."""
    async with RedisStore.from_url(redis_server.url, prefix=_prefix(), max_connections=2) as store:
        for i in range(20):
            await store.apply(f"a{i}", Claim(f"t{i}", "p1", "r", 30.0), grace=5.0)

        async def renew(i: int) -> None:
            await store.apply(f"a{i % 20}", Renew(f"t{i % 20}", "p1", 60.0 + i), grace=5.0)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(renew, i)
        now = await store.clock()
        for i in range(20):
            record = await store.record(f"a{i}")
            assert record is not None
            # the longest of the five renewals of each agent won, whatever the order they ran in
            assert record.lease_until == pytest.approx(now + 60.0 + 80 + i, abs=2.0)


async def test_waiting_readers_beyond_their_pool_do_not_hold_up_appends(redis_server: RedisServer) -> None:
    async with RedisStore.from_url(redis_server.url, prefix=_prefix(), max_blocking=2) as store:
        await store.log_open(LogMeta("t1", "agent"), ttl=60)
        got: list[list[LogFrame]] = []

        async def read() -> None:
            got.append(await store.log_read("t1", 0, wait=3.0))

        with anyio.fail_after(2):  # all six answered well before their 3 s wait is over
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(read)
                await anyio.sleep(0.1)
                began = anyio.current_time()
                await store.log_append("t1", [LogFrame(1, b"one")])
                assert anyio.current_time() - began < 0.5
        assert got == [[LogFrame(1, b"one")]] * 6


async def test_the_store_connects_on_first_use_from_any_task(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=_prefix())
    records = []
    async with anyio.create_task_group() as tg:  # first used by short-lived child tasks, concurrently
        for i in range(5):
            tg.start_soon(lambda i=i: store.apply(f"a{i}", Claim("t", "p", "r", 30.0), grace=5.0))
    for i in range(5):
        records.append(await store.record(f"a{i}"))
    assert all(r is not None and r.turn_id == "t" for r in records)
    await store.aclose()
    await store.aclose()  # twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        await store.record("a0")


async def test_a_lock_held_past_its_ttl_is_free_for_others(redis_server: RedisServer) -> None:
    async with RedisStore.from_url(redis_server.url, prefix=_prefix()) as store:
        async with store.lock("slow", ttl=0.2, wait=0):
            await anyio.sleep(0.3)  # the holder outlived its ttl: the lock expired under it
            async with store.lock("slow", ttl=5, wait=0):
                pass
        # leaving the first (expired) lock neither raised nor released the lock taken since
        async with store.lock("slow", ttl=5, wait=0):
            pass
