"""The TurnStore contract: every test runs on MemoryStore and RedisStore, under asyncio and trio.

Inputs are the turn machine's own (Claim, Detach, Expire, ...), so the tests check what
the driver relies on: atomic applies, the deadline index, the logs and the locks.  Times
are real (short leases and graces, sleeps under a second); on Redis the record, log and
lock expiries are Redis's own key TTLs, and the fixture checks after every test that no
key of the test lacks one.
"""

from __future__ import annotations

import math
import time

import anyio
import coredis
import pytest

from app.store import LockTimeout, LogConflict, LogFrame, LogGone, LogMeta, TurnStore
from app.turn_machine import (
    Adopt,
    Cancel,
    Claim,
    Detach,
    Expire,
    Finish,
    Follow,
    Lost,
    Refused,
    Renew,
    Started,
    Stop,
    Transition,
)

from .conftest import StoreFactory, keys_without_end

pytestmark = pytest.mark.anyio

GRACE = 0.3
LONG = 30.0
"""A lease that does not run out during a test."""


def claim(turn: str, owner: str = "p1", lease: float = LONG) -> Claim:
    return Claim(turn_id=turn, owner=owner, reader=f"r-{turn}", lease=lease)


def refused(transition: Transition) -> str | None:
    effect = transition.first(Refused)
    return effect.turn_id if isinstance(effect, Refused) else None


def frames(*seqs: int, last: int | None = None) -> list[LogFrame]:
    return [LogFrame(seq, f"id: {seq}\ndata: {seq}\n\n".encode(), last=seq == last) for seq in seqs]


# ---------------------------------------------------------------- records


async def test_claim_is_refused_while_the_turn_is_live(store: TurnStore) -> None:
    first = await store.apply("agent", claim("t1"), grace=GRACE)
    assert first.effects == ()
    assert first.record is not None
    assert first.record.turn_id == "t1"

    second = await store.apply("agent", claim("t2", owner="p2"), grace=GRACE)
    assert refused(second) == "t1"
    record = await store.record("agent")
    assert record is not None
    assert (record.turn_id, record.owner, record.reader) == ("t1", "p1", "r-t1")

    other = await store.apply("other-agent", claim("t3"), grace=GRACE)
    assert refused(other) is None  # one turn per agent, not per store


async def test_finish_frees_the_agent_and_only_its_owner_may(store: TurnStore) -> None:
    await store.apply("agent", claim("t1"), grace=GRACE)
    stranger = await store.apply("agent", Finish("t1", owner="p2"), grace=GRACE)
    assert stranger.first(Lost) == Lost("t1")
    assert await store.record("agent") is not None

    done = await store.apply("agent", Finish("t1", owner="p1"), grace=GRACE)
    assert done.record is None
    assert await store.record("agent") is None
    assert await store.next_due() is None

    again = await store.apply("agent", claim("t2"), grace=GRACE)
    assert refused(again) is None
    record = await store.record("agent")
    assert record is not None
    assert record.turn_id == "t2"


async def test_started_and_adopt_update_the_stored_record(store: TurnStore) -> None:
    await store.apply("agent", claim("t1"), grace=GRACE)
    await store.apply("agent", Started("t1", run_id="run-1"), grace=GRACE)
    adopted = await store.apply("agent", Adopt("t1", reader="r2", owner="p2", lease=LONG), grace=GRACE)
    assert adopted.first(Follow) == Follow("t1")
    record = await store.record("agent")
    assert record is not None
    assert (record.run_id, record.reader, record.owner) == ("run-1", "r2", "p1")


async def test_detach_sets_a_deadline_that_becomes_due(store: TurnStore) -> None:
    await store.apply("agent", claim("t1"), grace=GRACE)
    await store.apply("agent", Started("t1", run_id="run-1"), grace=GRACE)
    before = await store.clock()
    detached = await store.apply("agent", Detach("t1", reader="r-t1", grace=0.4), grace=GRACE)
    after = await store.clock()
    record = await store.record("agent")
    assert record is not None
    assert record == detached.record
    assert record.reader is None
    assert record.deadline is not None
    assert before + 0.4 <= record.deadline <= after + 0.4

    assert await store.next_due() == pytest.approx(record.deadline, abs=1e-6)
    assert await store.due(await store.clock()) == []
    # not due yet: Expire changes nothing
    early = await store.apply("agent", Expire(GRACE), grace=GRACE)
    assert early.effects == ()
    assert early.record == record

    await anyio.sleep(max(0.0, record.deadline - await store.clock()) + 0.05)
    assert await store.due(await store.clock()) == ["agent"]
    expired = await store.apply("agent", Expire(GRACE), grace=GRACE)
    assert expired.first(Cancel) == Cancel("agent", "run-1")
    stopping = await store.record("agent")
    assert stopping is not None
    assert stopping.stopping
    assert stopping.deadline is None
    # the runner still owns it: looked at again when its lease (plus grace) is over, not now
    assert await store.due(await store.clock()) == []
    assert await store.next_due() == pytest.approx(stopping.lease_until + GRACE, abs=1e-6)


async def test_an_orphaned_turn_is_given_up_after_its_lease_and_grace(store: TurnStore) -> None:
    await store.apply("agent", claim("t1", lease=0.2), grace=GRACE)
    await store.apply("agent", Started("t1", run_id="run-1"), grace=GRACE)
    record = await store.record("agent")
    assert record is not None
    assert await store.next_due() == pytest.approx(record.lease_until + GRACE, abs=1e-6)
    await anyio.sleep(0.25)
    assert await store.due(await store.clock()) == []  # a client may still resume it for ``grace``
    await anyio.sleep(max(0.0, record.lease_until + GRACE - await store.clock()) + 0.05)
    assert await store.due(await store.clock()) == ["agent"]
    gone = await store.apply("agent", Expire(GRACE), grace=GRACE)
    assert gone.record is None
    assert gone.first(Cancel) == Cancel("agent", "run-1")
    assert await store.record("agent") is None
    assert "agent" not in await store.due(await store.clock() + 100)


async def test_a_claim_after_the_lease_ran_out_takes_the_agent_and_cancels_the_old_run(store: TurnStore) -> None:
    await store.apply("agent", claim("t1", lease=0.2), grace=GRACE)
    await store.apply("agent", Started("t1", run_id="run-1"), grace=GRACE)
    assert refused(await store.apply("agent", claim("t2", owner="p2"), grace=GRACE)) == "t1"
    await anyio.sleep(0.25)
    taken = await store.apply("agent", claim("t2", owner="p2"), grace=GRACE)
    assert taken.effects == (Cancel("agent", "run-1"),)
    record = await store.record("agent")
    assert record is not None
    assert (record.turn_id, record.owner) == ("t2", "p2")


async def test_renew_extends_the_lease_of_its_owner_only(store: TurnStore) -> None:
    await store.apply("agent", claim("t1", lease=0.5), grace=GRACE)
    now = await store.clock()
    renewed = await store.apply("agent", Renew("t1", owner="p1", lease=5.0), grace=GRACE)
    record = await store.record("agent")
    assert record is not None
    assert record == renewed.record
    assert now + 5.0 - 0.5 <= record.lease_until <= now + 5.0 + 0.5
    assert await store.next_due() == pytest.approx(record.lease_until + GRACE, abs=1e-6)

    lost = await store.apply("agent", Renew("t1", owner="p2", lease=5.0), grace=GRACE)
    assert lost.first(Lost) == Lost("t1")
    stale = await store.apply("agent", Renew("old-turn", owner="p1", lease=5.0), grace=GRACE)
    assert stale.first(Lost) == Lost("old-turn")
    assert await store.record("agent") == record


async def test_stop_of_an_idle_agent_cancels_without_a_record(store: TurnStore) -> None:
    stopped = await store.apply("agent", Stop(run_id="run-9"), grace=GRACE)
    assert stopped.record is None
    assert stopped.effects == (Cancel("agent", "run-9"),)
    assert await store.record("agent") is None
    assert await store.next_due() is None


async def test_a_record_expires_for_good_after_its_margin(make_store: StoreFactory) -> None:
    store = await make_store(margin=0.2)
    await store.apply("agent", claim("t1", lease=0.2), grace=0.2)
    record = await store.record("agent")
    assert record is not None
    ends = record.expires_at(0.2, 0.2)
    assert ends == pytest.approx(await store.clock() + 0.6, abs=0.1)
    await anyio.sleep(max(0.0, ends - await store.clock()) - 0.15)
    assert await store.record("agent") == record  # not before its time
    await anyio.sleep(0.3)
    assert await store.record("agent") is None
    assert await store.due(await store.clock() + 100) == []
    assert await store.next_due() is None
    # an expired record is idle: a claim is not refused, and nothing is left to cancel
    assert (await store.apply("agent", claim("t2"), grace=0.2)).effects == ()


async def test_due_lists_agents_by_deadline_with_a_limit(store: TurnStore) -> None:
    for agent, grace in [("c", 0.3), ("a", 0.1), ("b", 0.2)]:
        await store.apply(agent, claim(f"t-{agent}"), grace=GRACE)
        await store.apply(agent, Detach(f"t-{agent}", reader=f"r-t-{agent}", grace=grace), grace=GRACE)
    await store.apply("busy", claim("t-busy"), grace=GRACE)  # attached: looked at after its lease
    deadlines = {}
    for agent in "abc":
        record = await store.record(agent)
        assert record is not None
        assert record.deadline is not None
        deadlines[agent] = record.deadline

    later = await store.clock() + 5
    assert await store.due(later) == ["a", "b", "c"]
    assert await store.due(later, limit=2) == ["a", "b"]
    assert await store.due(later, limit=0) == []
    assert await store.due(deadlines["b"]) == ["a", "b"]
    assert await store.due(deadlines["a"] - 0.01) == []
    assert await store.next_due() == pytest.approx(deadlines["a"], abs=1e-6)
    assert "busy" in await store.due(later + LONG + GRACE + 1)

    await store.apply("a", Adopt("t-a", reader="r9", owner="p1", lease=LONG), grace=GRACE)
    assert await store.due(later) == ["b", "c"]
    assert await store.next_due() == pytest.approx(deadlines["b"], abs=1e-6)


async def test_the_clock_is_wall_time(store: TurnStore) -> None:
    assert await store.clock() == pytest.approx(time.time(), abs=2.0)


# ---------------------------------------------------------------- concurrency


async def test_concurrent_claims_admit_exactly_one(make_store: StoreFactory) -> None:
    stores = [await make_store(), await make_store()]  # on Redis: two processes
    results: dict[str, Transition] = {}

    async def one(i: int) -> None:
        results[f"t{i}"] = await stores[i % 2].apply("agent", claim(f"t{i}", owner=f"p{i}"), grace=GRACE)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
    winners = [turn for turn, transition in results.items() if refused(transition) is None]
    assert len(winners) == 1
    assert {refused(t) for turn, t in results.items() if turn not in winners} == {winners[0]}
    record = await stores[0].record("agent")
    assert record is not None
    assert record.turn_id == winners[0]
    assert record.owner == f"p{winners[0][1:]}"


async def test_concurrent_appends_from_two_writers_conflict(make_store: StoreFactory) -> None:
    stores = [await make_store(), await make_store()]
    await stores[0].log_open(LogMeta("t1", "agent"), ttl=LONG)
    outcomes: list[str] = []

    async def write(store: TurnStore, tag: bytes) -> None:
        try:
            await store.log_append("t1", [LogFrame(s, tag) for s in (1, 2, 3)])
            outcomes.append("ok")
        except LogConflict:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, stores[0], b"A")
        tg.start_soon(write, stores[1], b"B")
    assert sorted(outcomes) == ["conflict", "ok"]
    kept = await stores[1].log_read("t1", 0)
    assert [f.seq for f in kept] == [1, 2, 3]
    assert len({f.data for f in kept}) == 1  # all three from the one writer that won


# ---------------------------------------------------------------- logs


async def test_log_append_and_read_after_any_seq(store: TurnStore) -> None:
    assert await store.log_meta("t1") is None
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    assert await store.log_meta("t1") == LogMeta("t1", "agent")
    assert await store.log_read("t1", 0) == []

    written = frames(1, 2, 3, 5, 8, last=8)  # gaps are allowed
    await store.log_append("t1", written[:2])
    await store.log_append("t1", written[2:])
    assert await store.log_read("t1", 0) == written
    assert await store.log_read("t1", 3) == written[3:]
    assert await store.log_read("t1", 4) == written[3:]
    assert await store.log_read("t1", 8) == []
    assert await store.log_read("t1", 100) == []
    assert await store.log_read("t1", 0, limit=2) == written[:2]
    assert (await store.log_read("t1", 5))[0].last is True
    assert [f.last for f in await store.log_read("t1", 0)] == [False] * 4 + [True]


async def test_log_bytes_round_trip_exactly(store: TurnStore) -> None:
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    odd = [
        b'id: 1\r\ndata: {"text": "\xc3\xa9t\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x8e\x89"}\r\n\r\n',
        "data: Grüße, 你好\n\n".encode(),
        b"\x00\xff\xfe raw bytes, not UTF-8\r\n",
        b"",
        b"x" * 100_000,
    ]
    await store.log_append("t1", [LogFrame(i + 1, data) for i, data in enumerate(odd)])
    assert [f.data for f in await store.log_read("t1", 0)] == odd


async def test_a_waiting_read_wakes_when_another_process_appends(make_store: StoreFactory) -> None:
    reader, writer = await make_store(), await make_store()
    await writer.log_open(LogMeta("t1", "agent"), ttl=LONG)
    await writer.log_append("t1", frames(1))
    got: list[LogFrame] = []
    took = 0.0

    async def read() -> None:
        nonlocal took
        began = anyio.current_time()
        got.extend(await reader.log_read("t1", 1, wait=5.0))
        took = anyio.current_time() - began

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.sleep(0.2)
        await writer.log_append("t1", frames(2, 3))
    assert [f.seq for f in got] == [2, 3]
    assert 0.15 <= took < 1.5


async def test_a_waiting_read_waits_its_time_then_returns_nothing(store: TurnStore) -> None:
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    await store.log_append("t1", frames(1, 2))
    began = anyio.current_time()
    assert await store.log_read("t1", 2, wait=0.3) == []
    assert 0.28 <= anyio.current_time() - began < 1.5
    # frames already there are returned at once, however long the wait
    began = anyio.current_time()
    assert [f.seq for f in await store.log_read("t1", 1, wait=5.0)] == [2]
    assert anyio.current_time() - began < 0.5


@pytest.mark.parametrize("nowait", [False, True], ids=["append", "append_nowait"])
async def test_a_waiting_read_of_an_empty_log_wakes_on_its_first_frame(store: TurnStore, nowait: bool) -> None:
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    got: list[LogFrame] = []

    async def read() -> None:
        got.extend(await store.log_read("t1", 0, wait=5.0))

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.sleep(0.1)
            if not (nowait and store.log_append_nowait("t1", frames(1))):  # a store that must be waited for: append
                await store.log_append("t1", frames(1))
    assert [f.seq for f in got] == [1]


async def test_an_append_without_waiting_is_an_append_or_nothing_at_all(store: TurnStore) -> None:
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    await store.log_append("t1", frames(1))
    done = store.log_append_nowait("t1", frames(2, 3))
    if not done:  # a store that must be waited for: nothing written, nothing checked
        assert [f.seq for f in await store.log_read("t1", 0)] == [1]
        assert store.log_append_nowait("nope", frames(1)) is False
        assert store.log_append_nowait("t1", frames(1)) is False
        return
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2, 3]
    with pytest.raises(LogConflict):  # all or nothing, as log_append
        store.log_append_nowait("t1", frames(4, 3))
    with pytest.raises(LogGone):
        store.log_append_nowait("nope", frames(1))
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2, 3]


async def test_a_missing_log_is_gone(store: TurnStore) -> None:
    with pytest.raises(LogGone):
        await store.log_read("nope", 0)
    with pytest.raises(LogGone):
        await store.log_read("nope", 0, wait=0.2)
    with pytest.raises(LogGone):
        await store.log_append("nope", frames(1))
    assert await store.log_meta("nope") is None
    await store.log_close("nope", keep=10)  # closing nothing is harmless
    assert await store.log_meta("nope") is None


async def test_frames_trimmed_away_are_gone(make_store: StoreFactory) -> None:
    store = await make_store(max_frames=5)
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    await store.log_append("t1", frames(1, 2, 3))
    await store.log_append("t1", frames(4, 5, 6, 7, 8))
    assert [f.seq for f in await store.log_read("t1", 3)] == [4, 5, 6, 7, 8]
    for after in (0, 1, 2):
        with pytest.raises(LogGone):
            await store.log_read("t1", after)
    await store.log_append("t1", frames(10))  # trimming follows appends; gaps count by seq
    assert [f.seq for f in await store.log_read("t1", 4)] == [5, 6, 7, 8, 10]
    with pytest.raises(LogGone):
        await store.log_read("t1", 3)
    assert await store.log_read("t1", 10) == []


async def test_appending_at_or_below_the_last_seq_conflicts(store: TurnStore) -> None:
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    await store.log_append("t1", frames(1, 2))
    for bad in ([2], [1], [2, 3], [5, 4], [0]):
        with pytest.raises(LogConflict):
            await store.log_append("t1", frames(*bad))
    await store.log_append("t1", frames(3))
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2, 3]  # nothing of a refused batch


async def test_a_closed_log_is_kept_for_its_time_then_gone(store: TurnStore, kind: str) -> None:
    await store.log_open(LogMeta("t1", "agent"), ttl=LONG)
    await store.log_append("t1", frames(1, 2, last=2))
    await store.log_close("t1", keep=0.4)
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2]
    assert await store.log_meta("t1") == LogMeta("t1", "agent")
    await anyio.sleep(0.5)
    with pytest.raises(LogGone):
        await store.log_read("t1", 0)
    assert await store.log_meta("t1") is None


async def test_an_open_log_lives_its_ttl(store: TurnStore) -> None:
    await store.log_open(LogMeta("t1", "agent"), ttl=0.4)
    await store.log_open(LogMeta("t1", "someone-else"), ttl=LONG)  # already open: unchanged
    assert await store.log_meta("t1") == LogMeta("t1", "agent")
    await store.log_append("t1", frames(1))
    await anyio.sleep(0.5)
    assert await store.log_meta("t1") is None
    with pytest.raises(LogGone):
        await store.log_read("t1", 0)
    with pytest.raises(LogGone):
        await store.log_append("t1", frames(2))


# ---------------------------------------------------------------- locks


async def test_a_lock_excludes_across_processes(make_store: StoreFactory) -> None:
    stores = [await make_store(), await make_store()]
    inside = 0
    most = 0
    entered = 0

    async def worker(store: TurnStore) -> None:
        nonlocal inside, most, entered
        for _ in range(3):
            async with store.lock("agents", ttl=5, wait=5):
                inside += 1
                entered += 1
                most = max(most, inside)
                await anyio.sleep(0.01)
                inside -= 1

    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(worker, store)
            tg.start_soon(worker, store)
    assert (most, entered) == (1, 12)


async def test_a_lock_not_acquired_in_time_raises(store: TurnStore) -> None:
    async with store.lock("agents", ttl=5, wait=1):
        began = anyio.current_time()
        with pytest.raises(LockTimeout):
            async with store.lock("agents", ttl=5, wait=0.2):
                pytest.fail("acquired a held lock")
        assert anyio.current_time() - began >= 0.15
        async with store.lock("other-name", ttl=5, wait=0):
            pass  # names are independent


async def test_a_lock_is_released_on_exit_and_when_the_body_fails(store: TurnStore) -> None:
    async with store.lock("agents", ttl=5, wait=0):
        pass
    async with store.lock("agents", ttl=5, wait=0):
        pass
    with pytest.raises(ValueError, match="boom"):
        async with store.lock("agents", ttl=5, wait=0):
            raise ValueError("boom")
    with anyio.move_on_after(0.1) as scope:
        async with store.lock("agents", ttl=5, wait=0):
            await anyio.sleep(5)
    assert scope.cancelled_caught
    async with store.lock("agents", ttl=5, wait=0):
        pass


async def test_a_lock_passes_to_one_waiter_at_a_time(store: TurnStore) -> None:
    order: list[str] = []
    second_in = anyio.Event()
    release_second = anyio.Event()

    async def second() -> None:
        async with store.lock("agents", ttl=5, wait=5):
            order.append("second in")
            second_in.set()
            await release_second.wait()
        order.append("second out")

    async with anyio.create_task_group() as tg:
        async with store.lock("agents", ttl=5, wait=0):
            tg.start_soon(second)
            await anyio.sleep(0.2)  # the second is waiting now
            order.append("first out")
        with anyio.fail_after(2):
            await second_in.wait()
        # the lock went to the waiter: a newcomer must not get it too
        with pytest.raises(LockTimeout):
            async with store.lock("agents", ttl=5, wait=0.2):
                order.append("newcomer in")
        release_second.set()
    assert order == ["first out", "second in", "second out"]


# ---------------------------------------------------------------- every key has an end


async def test_every_key_has_an_end_at_every_step(
    store: TurnStore, kind: str, prefix: str, redis_url: str | None
) -> None:
    """Records, the index, logs, metas and locks: each has an expiry from the moment it exists."""

    async def check() -> dict[bytes, int]:
        if redis_url is None:
            return {}
        async with coredis.Redis.from_url(redis_url, decode_responses=False) as raw:
            assert not await keys_without_end(raw, prefix)
            return {key: await raw.pttl(key) async for key in raw.scan_iter(match=f"{prefix}*")}

    await store.apply("agent", claim("t1", lease=10), grace=5)
    ttls = await check()
    record = await store.record("agent")
    assert record is not None
    if kind == "redis":
        expected_ms = (record.expires_at(5) - await store.clock()) * 1000
        assert ttls[f"{prefix}turn:agent".encode()] == pytest.approx(expected_ms, abs=500)
        assert ttls[f"{prefix}due".encode()] == pytest.approx(expected_ms, abs=500)

    await store.log_open(LogMeta("t1", "agent"), ttl=60)
    await check()
    await store.log_append("t1", frames(1, 2))
    ttls = await check()
    if kind == "redis":
        stream = ttls[f"{prefix}log:t1".encode()]
        meta = ttls[f"{prefix}log:t1:meta".encode()]
        assert 55_000 < stream <= 60_000
        assert abs(stream - meta) < 200
    await store.log_close("t1", keep=20)
    ttls = await check()
    if kind == "redis":
        assert 15_000 < ttls[f"{prefix}log:t1".encode()] <= 20_000
        assert 15_000 < ttls[f"{prefix}log:t1:meta".encode()] <= 20_000
    async with store.lock("agents", ttl=7, wait=1):
        ttls = await check()
        if kind == "redis":
            assert 5_000 < ttls[f"{prefix}lock:agents".encode()] <= 7_000
    await store.apply("agent", Finish("t1", owner="p1"), grace=5)
    ttls = await check()
    if kind == "redis":
        assert f"{prefix}turn:agent".encode() not in ttls
        assert f"{prefix}lock:agents".encode() not in ttls
    assert math.isfinite(await store.clock())
