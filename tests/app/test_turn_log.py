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
