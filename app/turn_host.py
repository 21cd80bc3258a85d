"""The thin driver of :mod:`app.turn_machine`: applies inputs through the store, performs the effects.

One :class:`TurnHost` per process.  It owns

* the app-lifetime task group in which this process's *runners* (and takeovers) run —
  a turn outlives the HTTP request that started it, so a client that drops does not
  end it;
* one deadline timer: it sleeps until the store's earliest deadline (any replica's),
  then applies ``Expire`` to what is due — whichever process wins the store's atomic
  update performs the cancel, exactly once;
* one lease loop renewing every turn this process runs; a turn whose lease was taken
  over by another process has its runner here cancelled (``Lost``), not its run.

Effects: ``Cancel`` goes to the cancel queue; ``Superseded`` cancels this process's
connection that no longer reads the turn; the others (``Refused``, ``Follow``,
``TakeOver``, ``Replay``) are the caller's to act on.

Shutting down (:meth:`TurnHost.run` returns): every turn still running here is handed off
(``Drain``) — not cancelled: its run goes on in Letta and a client resuming through
another replica takes it over.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import attrs
from anyio.abc import TaskGroup

from pipeline.halt import Cancellable

from .cancels import RunCanceller
from .metrics import StreamMetrics
from .store import TurnStore
from .turn_machine import Cancel, Drain, Expire, Input, Lost, Renew, Superseded, Transition

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""The longest the deadline timer sleeps: another replica may have set an earlier deadline meanwhile."""
DUE_PAGE = 200
"""Due turns taken from the store at a time."""
CONCURRENCY = 64
"""Store updates the timers make at once (renewing a thousand leases one by one would outlast the lease)."""


def process_id() -> str:
    """A name for this process that no other process (here or on another host) shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def new_id(prefix: str) -> str:
    """A fresh, unguessable id (turn ids travel in SSE ids and come back in ``Last-Event-ID``)."""
    return f"{prefix}-{uuid.uuid4().hex}"


@attrs.define(eq=False)
class _Owned:
    agent_id: str
    work: Cancellable
    """Cancels the work that runs the turn here (its task's handle, or the scope of an ``owning`` block)."""


@attrs.define(eq=False)
class TurnHost:
    """Runs this process's turns and keeps their shared records true."""

    store: TurnStore
    canceller: RunCanceller
    grace: float = 30.0
    """How long a turn whose client went away waits for a resume."""
    lease: float = 10.0
    """How long a turn's owner may be silent before others treat it as dead."""
    drain_seconds: float = 8.0
    """When the process shuts down, how long turns running here may take to end before they are handed off."""
    owner: str = attrs.Factory(process_id)
    metrics: StreamMetrics | None = None
    _tg: TaskGroup | None = attrs.field(default=None, init=False)
    _owned: dict[str, _Owned] = attrs.field(factory=dict, init=False)
    _readers: dict[str, Cancellable] = attrs.field(factory=dict, init=False)
    _idle: anyio.Event = attrs.field(factory=anyio.Event, init=False)
    closed: anyio.Event = attrs.field(factory=anyio.Event, init=False)
    """Set once :meth:`run` returned: no turn runs here any more (the cancel queue may close then)."""

    async def apply(self, agent_id: str, event: Input) -> Transition:
        """Apply ``event`` to the agent's shared record; perform ``Cancel`` and ``Superseded``."""
        transition = await self.store.apply(agent_id, event, grace=self.grace)
        log.debug("%s %r: %r -> %r %r", agent_id, event, transition.previous, transition.record, transition.effects)
        if self.metrics is not None and transition.detached_delta:
            self.metrics.detached(transition.detached_delta)
        for effect in transition.effects:
            if isinstance(effect, Cancel):
                log.info(
                    "cancelling run agent_id=%s run_id=%s (%s)", effect.agent_id, effect.run_id, type(event).__name__
                )
                self.canceller.submit(effect.agent_id, effect.run_id)
            elif isinstance(effect, Superseded):
                watcher = self._readers.get(effect.reader)
                if watcher is not None:
                    watcher.cancel()
        return transition

    async def apply_shielded(self, agent_id: str, event: Input, within: float = 5.0) -> Transition | None:
        """:meth:`apply` from a cleanup path: shielded from cancellation, bounded, failures logged."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(within):
            try:
                return await self.apply(agent_id, event)
            except Exception as exc:
                log.warning("turn store update failed agent_id=%s %s: %r", agent_id, type(event).__name__, exc)
        return None

    # ------------------------------------------------------------ connections

    def add_reader(self, reader: str, watcher: Cancellable) -> None:
        """Register connection ``reader``: ``watcher.cancel()`` ends it if another connection adopts its turn."""
        self._readers[reader] = watcher

    def discard_reader(self, reader: str, watcher: Cancellable) -> None:
        """Forget connection ``reader`` (if ``watcher`` is still the one registered for it)."""
        if self._readers.get(reader) is watcher:
            del self._readers[reader]

    # ------------------------------------------------------------ turns run here

    def start(self, agent_id: str, turn_id: str, work: Callable[[], Awaitable[Any]]) -> None:
        """Run ``work`` (a runner or a takeover of ``turn_id``) in the app's task group, renewing its lease.

        The task's own handle is what cancels it (no cancel scope of its own: one per open
        stream fewer).  Raises :class:`RuntimeError` when the host is not running (not
        serving, or shut down).
        """
        if self._tg is None:
            raise RuntimeError("the turn host is not running")
        handle: list[Cancellable] = []
        handle.append(self._tg.start_soon(self._own, agent_id, turn_id, work, handle))

    async def _own(
        self, agent_id: str, turn_id: str, work: Callable[[], Awaitable[Any]], handle: list[Cancellable]
    ) -> None:
        self._begin(turn_id, _Owned(agent_id, handle[0]))
        try:
            await work()
        except Exception:
            log.exception("turn %s failed in its runner", turn_id)
        finally:
            self._end(turn_id)

    @asynccontextmanager
    async def owning(self, agent_id: str, turn_id: str) -> AsyncIterator[None]:
        """Renew ``turn_id``'s lease while the caller's task runs it inside this block.

        The block is cancelled if the turn is lost to another process, or handed off
        when the process shuts down.
        """
        scope = anyio.CancelScope()
        self._begin(turn_id, _Owned(agent_id, scope))
        try:
            with scope:
                yield
        finally:
            self._end(turn_id)

    def _begin(self, turn_id: str, owned: _Owned) -> None:
        self._owned[turn_id] = owned
        self._idle = anyio.Event()
        if self.metrics is not None:
            self.metrics.running(1)

    def _end(self, turn_id: str) -> None:
        self._owned.pop(turn_id, None)
        if self.metrics is not None:
            self.metrics.running(-1)
        if not self._owned:
            self._idle.set()

    @property
    def running(self) -> int:
        """Turns this process runs now."""
        return len(self._owned)

    async def wait_idle(self, within: float) -> bool:
        """Wait (at most ``within`` s) until no turn runs here; whether that happened."""
        if not self._owned:
            return True
        with anyio.move_on_after(within):
            await self._idle.wait()
        return not self._owned

    # ------------------------------------------------------------ the app-lifetime task

    async def run(self, shutdown: Callable[[], Awaitable[object]]) -> None:
        """Run turns, the deadline timer and the lease loop until ``shutdown()`` returns; then hand off."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._deadlines)
                tg.start_soon(self._renewals)
                try:
                    await shutdown()
                    await self.wait_idle(self.drain_seconds)  # resumers elsewhere follow their logs meanwhile
                finally:
                    self._tg = None
                    with anyio.CancelScope(shield=True):
                        await self._hand_off()
                    tg.cancel_scope.cancel()
        finally:
            self.closed.set()

    async def _hand_off(self) -> None:
        for turn_id, owned in list(self._owned.items()):
            log.info("handing off turn %s (the process shuts down; a resume elsewhere takes it over)", turn_id)
            await self.apply_shielded(owned.agent_id, Drain(turn_id, self.owner, self.grace))
            owned.work.cancel()

    async def _deadlines(self) -> None:
        while True:
            try:
                now = await self.store.clock()
                soonest = await self.store.next_due()
                delay = POLL_SECONDS if soonest is None else min(max(soonest - now, 0.0), POLL_SECONDS)
                await anyio.sleep(delay)
                while True:  # a class leaving at once makes many turns due at once: take them all now
                    due = await self.store.due(await self.store.clock(), limit=DUE_PAGE)
                    await self._each(due, lambda agent_id: self.apply(agent_id, Expire(self.grace)))
                    if len(due) < DUE_PAGE:
                        break
            except Exception as exc:  # the store is down: try again, never die
                log.warning("deadline timer: %r", exc)
                await anyio.sleep(POLL_SECONDS)

    async def _each(self, items: list[str], work: Callable[[str], Awaitable[object]]) -> None:
        """``work(item)`` for every item, :data:`CONCURRENCY` at a time (one slow store call holds up no other)."""
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def one(item: str) -> None:
            async with limiter:
                await work(item)

        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(one, item)

    async def _renewals(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            await self._each(list(self._owned), self._renew)

    async def _renew(self, turn_id: str) -> None:
        owned = self._owned.get(turn_id)
        if owned is None:
            return  # ended meanwhile
        try:
            transition = await self.apply(owned.agent_id, Renew(turn_id, self.owner, self.lease))
        except Exception as exc:
            log.warning("renewing the lease of turn %s failed: %r", turn_id, exc)
            return
        if transition.first(Lost) is None or transition.record is None:
            # no record: the runner has just finished (it is handing out the last frame — never cut that
            # short), or the turn was given up and its run cancelled (the runner ends with Letta's stream)
            return
        if self._owned.get(turn_id) is owned:
            log.warning("turn %s was taken over by %s: cancelling its runner here", turn_id, transition.record.owner)
            owned.work.cancel()
