"""The turn store in this process: one worker, tests, a service without Redis.

The same contract as :mod:`app.store.redis` (one test suite runs against both), with
anyio primitives only, so it works under asyncio and trio.  Expiry is checked when a
key is touched and on :meth:`MemoryStore.due`/:meth:`MemoryStore.next_due`, so
nothing outlives its time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import attrs

from ..turn_machine import Input, Transition, TurnRecord, step
from .protocol import LockTimeout, LogConflict, LogFrame, LogGone, LogMeta


@attrs.define
class _Log:
    meta: LogMeta
    expires: float
    frames: list[LogFrame]
    """A list, not a deque: an empty deque holds a block of ~0.7 KiB, and most logs are short."""
    trimmed_to: int = 0
    """The highest seq no longer kept (0: nothing trimmed)."""
    changed: anyio.Event | None = None
    """Set by the next append (or the log's end); made only when a reader waits for one."""

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None


@attrs.define
class _Lock:
    lock: anyio.Semaphore = attrs.field(factory=lambda: anyio.Semaphore(1))
    """A semaphore, not an ``anyio.Lock``: like a lock in Redis it is not owned by a task, so a
    task asking again for a lock it holds waits (and times out) instead of raising."""
    users: int = 0
    """Tasks holding or waiting for the lock: the entry is dropped when the last one leaves."""


@attrs.define
class MemoryStore:
    """Everything in dictionaries of this process.  ``clock`` is the wall clock unless given (tests).

    ``margin``: how long a record outlives its last deadline (``TurnRecord.expires_at``).
    """

    max_frames: int = 10_000
    clock_fn: Callable[[], float] = time.time
    margin: float = 60.0
    _records: dict[str, tuple[TurnRecord, float, float]] = attrs.field(factory=dict, init=False)
    """agent id → (record, check at, expires at)."""
    _logs: dict[str, _Log] = attrs.field(factory=dict, init=False)
    _locks: dict[str, _Lock] = attrs.field(factory=dict, init=False)

    async def clock(self) -> float:
        return self.clock_fn()

    def _current(self, agent_id: str, now: float) -> TurnRecord | None:
        entry = self._records.get(agent_id)
        if entry is None:
            return None
        if now >= entry[2]:
            del self._records[agent_id]
            return None
        return entry[0]

    async def apply(self, agent_id: str, event: Input, *, grace: float) -> Transition:
        # the checkpoint comes first: a caller cancelled here has changed nothing (after the
        # write, its cancellation would lose the effects of a transition that did happen)
        await anyio.lowlevel.checkpoint()
        now = self.clock_fn()
        transition = step(self._current(agent_id, now), event, agent_id, now)
        new = transition.record
        if new is None:
            self._records.pop(agent_id, None)
        else:
            self._records[agent_id] = (new, new.check_at(grace), new.expires_at(grace, self.margin))
        return transition

    async def record(self, agent_id: str) -> TurnRecord | None:
        await anyio.lowlevel.checkpoint()
        return self._current(agent_id, self.clock_fn())

    async def due(self, now: float, limit: int = 100) -> list[str]:
        await anyio.lowlevel.checkpoint()
        self._purge(self.clock_fn())
        found = sorted((check, agent) for agent, (_, check, _) in self._records.items() if check <= now)
        return [agent for _, agent in found[:limit]]

    async def next_due(self) -> float | None:
        await anyio.lowlevel.checkpoint()
        self._purge(self.clock_fn())
        return min((check for _, check, _ in self._records.values()), default=None)

    def _purge(self, now: float) -> None:
        for agent in [a for a, (_, _, expires) in self._records.items() if now >= expires]:
            del self._records[agent]
        for turn in [t for t, log in self._logs.items() if now >= log.expires]:
            self._logs.pop(turn).notify()

    def _log(self, turn_id: str) -> _Log | None:
        log = self._logs.get(turn_id)
        if log is not None and self.clock_fn() >= log.expires:
            del self._logs[turn_id]
            log.notify()
            return None
        return log

    async def log_open(self, meta: LogMeta, ttl: float) -> None:
        await anyio.lowlevel.checkpoint()
        if self._log(meta.turn_id) is None:
            self._logs[meta.turn_id] = _Log(meta, self.clock_fn() + ttl, [])

    async def log_meta(self, turn_id: str) -> LogMeta | None:
        await anyio.lowlevel.checkpoint()
        log = self._log(turn_id)
        return None if log is None else log.meta

    async def log_append(self, turn_id: str, frames: Sequence[LogFrame]) -> None:
        await anyio.lowlevel.checkpoint()
        self._append(turn_id, frames)

    def log_append_nowait(self, turn_id: str, frames: Sequence[LogFrame]) -> bool:
        self._append(turn_id, frames)  # in this process: nothing to wait for
        return True

    def _append(self, turn_id: str, frames: Sequence[LogFrame]) -> None:
        log = self._log(turn_id)
        if log is None:
            raise LogGone(f"no log for turn {turn_id}")
        last = log.frames[-1].seq if log.frames else log.trimmed_to
        for frame in frames:
            if frame.seq <= last:
                raise LogConflict(f"frame {frame.seq} of turn {turn_id} is not after {last}")
            last = frame.seq
        log.frames.extend(frames)
        excess = len(log.frames) - self.max_frames
        if excess > 0:
            log.trimmed_to = log.frames[excess - 1].seq
            del log.frames[:excess]
        if frames:
            log.notify()

    async def log_read(self, turn_id: str, after: int, *, wait: float = 0.0, limit: int = 1000) -> list[LogFrame]:
        deadline = anyio.current_time() + wait
        while True:
            log = self._log(turn_id)
            if log is None:
                raise LogGone(f"no log for turn {turn_id}")
            if after < log.trimmed_to:
                raise LogGone(f"frames after {after} of turn {turn_id} are no longer kept")
            newer: list[LogFrame] = []
            for frame in reversed(log.frames):  # a follower wants the last few: no scan of the whole log
                if frame.seq <= after:
                    break
                newer.append(frame)
            found = newer[::-1][: max(limit, 0)]
            remaining = deadline - anyio.current_time()
            if found or remaining <= 0 or limit <= 0:
                await anyio.lowlevel.checkpoint()
                return found
            # woken by any append (or the log's expiry): read again, and wait on until the deadline
            if log.changed is None:
                log.changed = anyio.Event()
            with anyio.move_on_after(remaining):
                await log.changed.wait()

    async def log_close(self, turn_id: str, keep: float) -> None:
        await anyio.lowlevel.checkpoint()
        log = self._log(turn_id)
        if log is not None:
            log.expires = self.clock_fn() + keep

    @asynccontextmanager
    async def lock(self, name: str, *, ttl: float, wait: float) -> AsyncIterator[None]:
        # ``ttl`` bounds a holder that dies; in one process a dead holder takes the lock with it
        entry = self._locks.setdefault(name, _Lock())
        # counted, not judged by ``tasks_waiting``: a release hands the lock straight to the next
        # waiter, which then no longer counts as waiting, and dropping the entry then would let a
        # newcomer take a fresh lock of the same name while that waiter holds the old one
        entry.users += 1
        try:
            try:
                entry.lock.acquire_nowait()  # a free lock is taken even with ``wait=0``
            except anyio.WouldBlock:
                acquired = False
                with anyio.move_on_after(wait):
                    await entry.lock.acquire()
                    acquired = True
                if not acquired:
                    raise LockTimeout(f"lock {name!r} not acquired within {wait} s") from None
            try:
                await anyio.lowlevel.checkpoint()
                yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0 and self._locks.get(name) is entry:
                del self._locks[name]

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()
