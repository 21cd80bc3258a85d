"""Turns whose client went away, kept running for a grace period so the client can resume.

A dropped connection (a phone switching networks, a proxy restart) is not a stop
button.  When a resumable turn (Letta background mode) loses its client, the agent
stays claimed and the run keeps going; the client has ``grace`` seconds to come back
with ``Last-Event-ID`` and :meth:`DetachedTurns.adopt` the turn.  Otherwise the run is
cancelled (through the cancel queue) and the agent released, as before.  An explicit
stop (``POST /chat/cancel``) skips the wait.

Timers run in :meth:`DetachedTurns.run`'s task group, which lives as long as the app;
when the service drains, every held turn is cancelled at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import attrs
from anyio.abc import TaskGroup

from .cancels import RunCanceller
from .turns import TurnGuard

log = logging.getLogger(__name__)


@attrs.define
class Detached:
    agent_id: str
    run_id: str
    timer: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)


@attrs.define
class DetachedTurns:
    """The detached turns, by run id.  A held turn keeps its agent claimed in ``guard``."""

    guard: TurnGuard
    canceller: RunCanceller
    grace: float = 30.0
    adopted_total: int = 0
    _held: dict[str, Detached] = attrs.field(factory=dict, init=False)
    _stops: set[str] = attrs.field(factory=set, init=False)
    _tg: TaskGroup | None = attrs.field(default=None, init=False)

    def hold(self, agent_id: str, run_id: str) -> bool:
        """Keep ``run_id`` alive for the grace period; ``False`` if it must be cancelled now instead.

        It must be cancelled now when the client asked to stop, when nothing runs the
        timers (the app is not serving, or is draining) or when there is no grace.
        """
        if self._tg is None or self.grace <= 0 or agent_id in self._stops:
            return False
        record = self._held[run_id] = Detached(agent_id, run_id)
        self._tg.start_soon(self._expire_later, record)
        log.info("turn detached agent_id=%s run_id=%s grace_s=%s", agent_id, run_id, self.grace)
        return True

    def adopt(self, agent_id: str, run_id: str) -> bool:
        """Take over held ``run_id`` of ``agent_id`` (its agent stays claimed, now by the caller)."""
        record = self._held.get(run_id)
        if record is None or record.agent_id != agent_id:
            return False
        del self._held[run_id]
        record.timer.cancel()
        self.adopted_total += 1
        return True

    def held_run(self, agent_id: str) -> str | None:
        """The run held for ``agent_id``, if any."""
        return next((r.run_id for r in self._held.values() if r.agent_id == agent_id), None)

    def stop(self, agent_id: str) -> bool:
        """The client pressed stop: cancel a held turn of ``agent_id`` now, and hold none of its turns
        until :meth:`forget_stop`.  ``True`` if a held turn was cancelled."""
        run_id = self.held_run(agent_id)
        if run_id is not None:
            self._expire(self._held[run_id], cancel=True)
        elif self.guard.busy(agent_id):  # a stream still attached: when it ends, cancel, don't hold
            self._stops.add(agent_id)
        return run_id is not None

    def forget_stop(self, agent_id: str) -> None:
        """The agent's stream is over: a later turn may be held again."""
        self._stops.discard(agent_id)

    def release(self, agent_id: str, run_id: str) -> None:
        """The held run is over anyway (Letta says so): free its agent without cancelling."""
        record = self._held.get(run_id)
        if record is not None and record.agent_id == agent_id:
            self._expire(record, cancel=False)

    async def run(self, stopping: Callable[[], Awaitable[object]]) -> None:
        """Run the timers until ``stopping()`` returns; then cancel every held turn at once."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await stopping()
            finally:
                self._tg = None
                for record in list(self._held.values()):
                    self._expire(record, cancel=True)
                tg.cancel_scope.cancel()

    async def _expire_later(self, record: Detached) -> None:
        with record.timer:
            await anyio.sleep(self.grace)
            if self._held.get(record.run_id) is record:
                log.info("detached turn not resumed in %s s: cancelling run_id=%s", self.grace, record.run_id)
                self._expire(record, cancel=True)

    def _expire(self, record: Detached, *, cancel: bool) -> None:
        self._held.pop(record.run_id, None)
        record.timer.cancel()
        if cancel:
            self.canceller.submit(record.agent_id, record.run_id)
        self.guard.release(record.agent_id)

    def __len__(self) -> int:
        return len(self._held)
