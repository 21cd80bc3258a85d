"""The turn log's writer: it opens the log in its own task, and a store that cannot open it breaks only the log."""

from __future__ import annotations

import anyio
import pytest

from app.store import LogFrame, LogMeta
from app.store.memory import MemoryStore
from app.turn_log import LogWriter

pytestmark = pytest.mark.anyio


async def test_the_writer_opens_the_log_then_appends_what_was_queued_before() -> None:
    store = MemoryStore()
    writer = LogWriter(store, "t1", opening=(LogMeta("t1", "agent"), 60.0))
    writer.extend([LogFrame(1, b"a"), LogFrame(2, b"b", last=True)])  # queued before the log exists
    assert await store.log_meta("t1") is None
    writer.close()
    with anyio.fail_after(5):
        await writer.run()
    assert writer.broken is None
    assert await store.log_meta("t1") == LogMeta("t1", "agent")
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2]


class _CannotOpen(MemoryStore):
    async def log_open(self, meta: LogMeta, ttl: float) -> None:
        raise ConnectionError("the store is down")


async def test_a_log_that_cannot_be_opened_is_broken_and_the_writer_stops() -> None:
    store = _CannotOpen()
    writer = LogWriter(store, "t1", opening=(LogMeta("t1", "agent"), 60.0))
    writer.append(LogFrame(1, b"a"))
    with anyio.fail_after(5):
        await writer.run()  # returns although never closed: nothing it writes could be replayed
    assert isinstance(writer.broken, ConnectionError)
    writer.append(LogFrame(2, b"b"))  # the live stream goes on handing frames: they are dropped, never wait
    assert await store.log_meta("t1") is None


async def test_once_open_a_store_in_this_process_takes_frames_at_once_without_the_writers_task() -> None:
    store = MemoryStore()
    await store.log_open(LogMeta("t1", "agent"), 60.0)
    writer = LogWriter(store, "t1")  # its task never runs here
    writer.extend([LogFrame(1, b"a"), LogFrame(2, b"b")])
    writer.append(LogFrame(3, b"c", last=True))
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2, 3]
    assert (writer.appended, writer.batches, writer.broken) == (3, 2, None)


class _Remote(MemoryStore):
    """A store that must be waited for (as Redis): nothing is taken without the writer's task."""

    def log_append_nowait(self, turn_id: str, frames: object) -> bool:
        return False


async def test_a_store_that_must_be_waited_for_gets_the_frames_from_the_writers_task_in_order() -> None:
    store = _Remote()
    await store.log_open(LogMeta("t1", "agent"), 60.0)
    writer = LogWriter(store, "t1")
    writer.extend([LogFrame(1, b"a"), LogFrame(2, b"b")])
    assert await store.log_read("t1", 0) == []
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        writer.append(LogFrame(3, b"c"))
        writer.close()
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2, 3]
    assert writer.broken is None


async def test_frames_queued_before_the_log_opened_stay_before_the_later_ones() -> None:
    store = MemoryStore()
    writer = LogWriter(store, "t1", opening=(LogMeta("t1", "agent"), 60.0))
    writer.extend([LogFrame(1, b"a")])  # before the writer's task opened the log: queued
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        with anyio.fail_after(5):
            while writer.appended < 1:  # noqa: ASYNC110  # the writer's own counter, no event to wait on
                await anyio.sleep(0.01)
        writer.extend([LogFrame(2, b"b")])  # open, nothing queued: at once
        assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2]
        writer.close()
    assert writer.broken is None


async def test_a_conflicting_frame_breaks_only_the_log() -> None:
    store = MemoryStore()
    await store.log_open(LogMeta("t1", "agent"), 60.0)
    await store.log_append("t1", [LogFrame(1, b"someone else")])
    writer = LogWriter(store, "t1")
    writer.extend([LogFrame(1, b"a")])
    assert writer.broken is not None
    writer.extend([LogFrame(2, b"b")])  # dropped, never raises: the live stream goes on
    assert [f.data for f in await store.log_read("t1", 0)] == [b"someone else"]


async def test_with_a_store_in_this_process_the_writers_task_ends_once_the_log_is_open() -> None:
    store = MemoryStore()
    writer = LogWriter(store, "t1", opening=(LogMeta("t1", "agent"), 60.0))
    writer.append(LogFrame(1, b"a"))
    with anyio.fail_after(5):
        await writer.run()  # not closed, yet it returns: nothing is left for it to do
    writer.append(LogFrame(2, b"b"))
    assert [f.seq for f in await store.log_read("t1", 0)] == [1, 2]
    writer.close()
    with anyio.fail_after(5):
        await writer.run()
    assert (writer.appended, writer.broken) == (2, None)


async def test_with_a_remote_store_the_writers_task_waits_until_closed() -> None:
    store = _Remote()
    writer = LogWriter(store, "t1", opening=(LogMeta("t1", "agent"), 60.0))
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await anyio.sleep(0.05)
        writer.append(LogFrame(1, b"a"))
        await anyio.sleep(0.05)
        assert [f.seq for f in await store.log_read("t1", 0)] == [1]  # written by the still running task
        writer.close()
    assert writer.broken is None
