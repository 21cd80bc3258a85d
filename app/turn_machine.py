"""A turn's whole life, per agent, as one pure state machine (sans-IO, told the time).

Every guarantee the service makes about a turn — one turn per agent, a dropped client
may come back within a grace period, the stop button stops at once, a dead process
frees its agents — is a transition here, and nowhere else.  :func:`step` takes the
agent's current :class:`TurnRecord` (or ``None``: idle), one input and the time, and
returns the new record and the *effects* the caller must perform (cancel this run,
take over that turn, ...).  It does no IO: a store applies it atomically to the shared
record (:mod:`app.store`), and the driver (:mod:`app.turn_host`) performs the effects.

The states of an agent::

    idle (no record)
      │ claim                                  a new message; refused (409) while a turn is live
      ▼
    running, attached(reader) ──detach──► running, detached(deadline) ──expire──► stopping
      ▲   │                                   │                                      │
      │   └─────────── adopt (resume) ◄───────┘                                      │
      │ finish (Letta ended the turn) from any running state → idle ◄────────────────┘
      │
    orphaned (owner's lease ran out, or its process drained) ──adopt──► running (taken over)

* **owner** — the process that reads the turn from Letta (its *runner*) holds a lease,
  renewed while it runs (``renew``).  A lease that runs out means the process died:
  the next ``adopt`` takes the turn over, the next ``claim`` cancels its run and starts
  anew, and with nobody coming the turn is given up ``grace`` after the lease ended.
* **reader** — the connection streaming the turn to a client.  ``detach`` when it goes
  away starts the grace period; ``adopt`` (a ``Last-Event-ID``) attaches a new one,
  from any process.
* **stopping** — the run's cancel has been sent (stop button, or grace over); the
  runner still logs Letta's last events, then ``finish`` frees the agent.

Times are seconds on the store's clock (wall time, shared by every replica).
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

# ---------------------------------------------------------------- the record


@attrs.frozen
class TurnRecord:
    """The one turn an agent has now.  Absent (``None``) when the agent is idle."""

    turn_id: str
    agent_id: str
    owner: str | None
    """The process running the turn; ``None`` once it drained (the turn waits for a taker)."""
    lease_until: float
    run_id: str | None = None
    """Letta's run, once its first chunk named it."""
    reader: str | None = None
    """The connection streaming the turn now; ``None`` while detached."""
    deadline: float | None = None
    """While detached: when the run is cancelled unless a client adopts the turn."""
    stopping: bool = False
    """The run's cancel was requested (sent, or to send as soon as the run id is known)."""

    def owned(self, now: float) -> bool:
        """Whether a live process runs the turn (its lease has not run out)."""
        return self.owner is not None and now < self.lease_until

    def check_at(self, grace: float) -> float:
        """When the turn must be looked at again if nothing happens (the store indexes this)."""
        if self.deadline is not None:
            return self.deadline
        return self.lease_until + grace

    def expires_at(self, grace: float, margin: float = 60.0) -> float:
        """When the store may forget the record for good (a safety net: every key has an end).

        Never while the owner's lease lasts: a detached turn whose deadline was not acted on
        in time must not vanish under a live runner (it would leave its run going in Letta
        while the agent looks idle, and a new message would run beside it).
        """
        return max(self.check_at(grace), self.lease_until) + margin


# ---------------------------------------------------------------- inputs


@attrs.frozen
class Claim:
    """A new message: start turn ``turn_id``, run by ``owner``, read by ``reader``."""

    turn_id: str
    owner: str
    reader: str
    lease: float


@attrs.frozen
class Started:
    """The runner learnt the turn's Letta run id."""

    turn_id: str
    run_id: str


@attrs.frozen
class Renew:
    """The runner is alive: extend its lease."""

    turn_id: str
    owner: str
    lease: float


@attrs.frozen
class Detach:
    """Connection ``reader`` went away mid-turn: wait ``grace`` seconds for a resume (0: cancel now)."""

    turn_id: str
    reader: str
    grace: float


@attrs.frozen
class Adopt:
    """A client resumes ``turn_id`` on connection ``reader`` in process ``owner`` (a ``Last-Event-ID``)."""

    turn_id: str
    reader: str
    owner: str
    lease: float


@attrs.frozen
class Stop:
    """The stop button: cancel the agent's turn now (``run_id`` if the client knows it)."""

    run_id: str | None = None


@attrs.frozen
class Expire:
    """A deadline may have passed: give up a detached turn, or one whose owner died, if it is due."""

    grace: float


@attrs.frozen
class Finish:
    """The runner read the turn to its end (Letta's last event is in the log): free the agent."""

    turn_id: str
    owner: str


@attrs.frozen
class Drain:
    """The owner's process is shutting down: leave the turn to whoever resumes it (no cancel)."""

    turn_id: str
    owner: str
    grace: float


Input: TypeAlias = Claim | Started | Renew | Detach | Adopt | Stop | Expire | Finish | Drain

# ---------------------------------------------------------------- effects


@attrs.frozen
class Refused:
    """The claim is refused: the agent is answering turn ``turn_id`` (HTTP 409)."""

    turn_id: str


@attrs.frozen
class Cancel:
    """Ask Letta to cancel ``run_id`` of ``agent_id`` (``None``: the agent's current run)."""

    agent_id: str
    run_id: str | None


@attrs.frozen
class Follow:
    """The resume is admitted and the runner is alive: replay the turn's log, then follow it."""

    turn_id: str


@attrs.frozen
class TakeOver:
    """The resume is admitted and the runner is gone: the caller now owns the turn and must finish it."""

    turn_id: str
    run_id: str | None


@attrs.frozen
class Replay:
    """The turn is no longer live (it ended): only its log remains to be read."""

    turn_id: str


@attrs.frozen
class Superseded:
    """Connection ``reader`` no longer reads the turn (another connection adopted it)."""

    reader: str


@attrs.frozen
class Lost:
    """The caller is not (or no longer) the turn's owner: it must stop running it."""

    turn_id: str


Effect: TypeAlias = Refused | Cancel | Follow | TakeOver | Replay | Superseded | Lost


@attrs.frozen
class Transition:
    """The record after one input, and what the caller must do."""

    record: TurnRecord | None
    effects: tuple[Effect, ...] = ()
    previous: TurnRecord | None = attrs.field(default=None, eq=False)
    """The record before (for observers, e.g. the gauge of detached turns)."""

    @property
    def detached_delta(self) -> int:
        """+1 when the turn became detached (no reader, waiting), -1 when it stopped being so, else 0."""
        return int(_waiting(self.record)) - int(_waiting(self.previous))

    def first(self, kind: type[Effect]) -> Effect | None:
        return next((e for e in self.effects if isinstance(e, kind)), None)


def _waiting(record: TurnRecord | None) -> bool:
    return record is not None and record.reader is None and record.deadline is not None and not record.stopping


def _stay(record: TurnRecord | None, *effects: Effect) -> Transition:
    return Transition(record, effects)


def _cancel(agent_id: str, run_id: str | None) -> tuple[Effect, ...]:
    """Cancel ``run_id`` — never "the agent's current run": that may already be the next turn's.

    A run not known yet is cancelled when the runner learns it (``Started`` of a stopping turn);
    one nobody will ever learn (its runner died before the first chunk) is left to Letta's own limit.
    """
    return () if run_id is None else (Cancel(agent_id, run_id),)


# ---------------------------------------------------------------- the table


def step(record: TurnRecord | None, event: Input, agent_id: str, now: float) -> Transition:
    """The agent's record after ``event`` at ``now``, and the effects to perform."""
    return attrs.evolve(_step(record, event, agent_id, now), previous=record)


def _step(record: TurnRecord | None, event: Input, agent_id: str, now: float) -> Transition:
    if isinstance(event, Claim):
        return _claim(record, event, agent_id, now)
    if isinstance(event, Stop):
        return _stop(record, event, agent_id, now)
    if isinstance(event, Expire):
        return _expire(record, event, now)
    if isinstance(event, Adopt):
        return _adopt(record, event, now)
    if record is None or record.turn_id != event.turn_id:
        # the turn is over (or was never this agent's): a late input of an old turn changes nothing
        return _stay(record, Lost(event.turn_id)) if isinstance(event, Renew) else _stay(record)
    if isinstance(event, Started):
        updated = attrs.evolve(record, run_id=event.run_id)
        return _stay(updated, Cancel(record.agent_id, event.run_id)) if record.stopping else _stay(updated)
    if isinstance(event, Renew):
        if record.owner != event.owner:
            return _stay(record, Lost(record.turn_id))
        return _stay(attrs.evolve(record, lease_until=max(record.lease_until, now + event.lease)))
    if isinstance(event, Detach):
        return _detach(record, event, now)
    if isinstance(event, Finish):
        return _stay(None) if record.owner == event.owner else _stay(record, Lost(record.turn_id))
    if isinstance(event, Drain):
        if record.owner != event.owner:
            return _stay(record)
        # its clients were on this process too: they have ``grace`` to resume elsewhere
        return _stay(attrs.evolve(record, owner=None, lease_until=now, reader=None, deadline=now + event.grace))
    raise TypeError(f"not a turn input: {event!r}")  # pragma: no cover - the union is closed


def _claim(record: TurnRecord | None, event: Claim, agent_id: str, now: float) -> Transition:
    fresh = TurnRecord(event.turn_id, agent_id, event.owner, now + event.lease, reader=event.reader)
    if record is None:
        return _stay(fresh)
    if record.owned(now):
        return _stay(record, Refused(record.turn_id))
    # its process died or drained and nobody took it over: the student moved on; stop the old run
    return _stay(fresh, *_cancel(record.agent_id, record.run_id))


def _detach(record: TurnRecord, event: Detach, now: float) -> Transition:
    if record.reader != event.reader:
        return _stay(record)  # already detached, or another connection adopted the turn
    if record.stopping:
        return _stay(attrs.evolve(record, reader=None))
    if event.grace <= 0:
        return _stay(attrs.evolve(record, reader=None, stopping=True), *_cancel(record.agent_id, record.run_id))
    return _stay(attrs.evolve(record, reader=None, deadline=now + event.grace))


def _adopt(record: TurnRecord | None, event: Adopt, now: float) -> Transition:
    if record is None or record.turn_id != event.turn_id:
        return _stay(record, Replay(event.turn_id))
    effects: list[Effect] = []
    if record.reader is not None and record.reader != event.reader:
        effects.append(Superseded(record.reader))
    adopted = attrs.evolve(record, reader=event.reader, deadline=None)
    if record.owned(now):
        effects.append(Follow(record.turn_id))
    else:
        adopted = attrs.evolve(adopted, owner=event.owner, lease_until=now + event.lease)
        effects.append(TakeOver(record.turn_id, record.run_id))
    return _stay(adopted, *effects)


def _stop(record: TurnRecord | None, event: Stop, agent_id: str, now: float) -> Transition:
    if record is None:
        return _stay(None, *_cancel(agent_id, event.run_id))  # nothing of ours runs: ask Letta anyway
    if event.run_id is not None and record.run_id is not None and event.run_id != record.run_id:
        return _stay(record, *_cancel(agent_id, event.run_id))  # a late stop of an older run: not this turn
    cancel = _cancel(record.agent_id, record.run_id or event.run_id)
    if not record.owned(now):
        return _stay(None, *cancel)  # nobody will finish it: free the agent now
    if record.stopping:
        return _stay(record)
    # run id unknown yet: the cancel goes out when the runner learns it (``Started``)
    return _stay(attrs.evolve(record, stopping=True, deadline=None), *cancel)


def _expire(record: TurnRecord | None, event: Expire, now: float) -> Transition:
    if record is None:
        return _stay(None)
    cancel = _cancel(record.agent_id, record.run_id)
    if not record.owned(now):
        if now < record.check_at(event.grace):
            return _stay(record)  # a client may still resume it and take it over
        return _stay(None, *cancel)
    if record.deadline is None or now < record.deadline or record.stopping:
        return _stay(record)
    return _stay(attrs.evolve(record, deadline=None, stopping=True), *cancel)
