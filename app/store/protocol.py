"""The store's contract, shared by the in-memory and the Redis implementation."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs

from ..turn_machine import Input, Transition, TurnRecord


class LockTimeout(Exception):
    """A lock was not acquired within the time allowed."""


class LogConflict(Exception):
    """A frame was appended at a sequence number the log already has: another process writes this log."""


class LogGone(Exception):
    """The frames asked for are no longer kept (the log expired, or was trimmed past them)."""


@attrs.frozen
class LogFrame:
    """Frame ``seq`` of a turn's log: the SSE frame bytes (with their ``id:``), and whether it ends the turn."""

    seq: int
    data: bytes
    last: bool = False


@attrs.frozen
class LogMeta:
    """Who a turn's log belongs to."""

    turn_id: str
    agent_id: str


class TurnStore(Protocol):
    """Shared turn state.  All methods are safe to call from any task, process or replica.

    Records: :meth:`apply` runs the pure :func:`app.turn_machine.step` on an agent's
    record atomically (no other apply to that agent interleaves) and stores the result;
    a record is also indexed by when it must be looked at again
    (:meth:`~app.turn_machine.TurnRecord.check_at`) and expires for good at
    :meth:`~app.turn_machine.TurnRecord.expires_at`.

    Logs: each turn's frames by sequence number (from 1, strictly increasing, no gaps
    required), at most ``max_frames`` kept, readable by any process while the turn runs
    and for ``keep`` seconds after :meth:`log_close`.

    Failures: an error of the backing store (Redis unreachable, a timeout) propagates as
    is; a write whose reply was lost may or may not have happened, so the store does not
    retry it (a retried claim would find its own record and be refused).
    """

    async def clock(self) -> float:
        """The store's time in seconds (wall clock: the same for every replica).

        :meth:`apply` reads the same clock; ``due(await store.clock())`` is what is due now.
        (Redis: the server's ``TIME``, so replicas need no synchronised clocks.)
        """
        ...

    async def apply(self, agent_id: str, event: Input, *, grace: float) -> Transition:
        """Apply ``event`` to ``agent_id``'s record atomically; the transition (new record and effects).

        ``grace`` indexes the new record (``check_at(grace)``) and sets its expiry
        (``expires_at(grace)``); a record past its expiry reads as ``None`` (idle).
        """
        ...

    async def record(self, agent_id: str) -> TurnRecord | None:
        """The agent's current :class:`~app.turn_machine.TurnRecord` (``None`` when idle); for reading only."""
        ...

    async def due(self, now: float, limit: int = 100) -> list[str]:
        """Agents whose record must be looked at by ``now`` (at most ``limit``), earliest first.

        Ties are ordered by agent id; expired records are never listed.
        """
        ...

    async def next_due(self) -> float | None:
        """The earliest time a record must be looked at, if any record exists."""
        ...

    async def log_open(self, meta: LogMeta, ttl: float) -> None:
        """Start the log of ``meta.turn_id``; it lives at most ``ttl`` seconds unless closed sooner.

        Opening a log that exists changes nothing (neither its meta nor its expiry).
        """
        ...

    async def log_meta(self, turn_id: str) -> LogMeta | None:
        """Whose log ``turn_id`` is, or ``None`` if there is no such log (never, or expired)."""
        ...

    async def log_append(self, turn_id: str, frames: Sequence[LogFrame]) -> None:
        """Append ``frames`` (ascending ``seq``, each above the log's last); :class:`LogConflict` otherwise.

        All or nothing: a batch that conflicts writes no frame.  :class:`LogGone` if the log
        does not exist (never opened, or expired), even for an empty batch.
        """
        ...

    def log_append_nowait(self, turn_id: str, frames: Sequence[LogFrame]) -> bool:
        """Append ``frames`` at once, without waiting, if this store can (a store in this process).

        ``True``: appended, exactly as :meth:`log_append` would have (same errors, raised
        here).  ``False``: this store must be waited for; nothing was written or checked.
        """
        ...

    async def log_read(self, turn_id: str, after: int, *, wait: float = 0.0, limit: int = 1000) -> list[LogFrame]:
        """Frames with ``seq > after`` (at most ``limit``); if none, wait up to ``wait`` seconds for one.

        :class:`LogGone` if frames after ``after`` were trimmed or the log no longer exists.
        A wait ends early only with frames: otherwise it lasts ``wait`` seconds, and a log
        that expired meanwhile may be reported (``LogGone``) only when it ends.
        """
        ...

    async def log_close(self, turn_id: str, keep: float) -> None:
        """The turn ended: keep its log (and meta) ``keep`` more seconds, then forget it."""
        ...

    def lock(self, name: str, *, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        """Hold lock ``name`` (held at most ``ttl`` seconds); :class:`LockTimeout` after ``wait`` seconds.

        ``wait=0`` makes one attempt.  Not reentrant: a task asking again for a lock it
        holds waits like anyone else.  Released on leaving the block however it is left
        (an exception, a cancellation).  A body that outlives ``ttl`` may find the lock
        taken by another; leaving it then does not raise.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...
