"""The turn state machine (:func:`app.turn_machine.step`), without an event loop.

Every transition of every state is one row of a table (state x input -> record, effects);
the README's promises about dropped clients, the stop button, shutdown and dead processes
are short input sequences; a hypothesis property test runs random sequences of inputs
(through a model of the store's expiry) and checks the machine's invariants after each.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import event as label
from hypothesis import given, settings
from hypothesis import strategies as st

from app.turn_machine import (
    Adopt,
    Cancel,
    Claim,
    Detach,
    Drain,
    Effect,
    Expire,
    Finish,
    Follow,
    Input,
    Lost,
    Refused,
    Renew,
    Replay,
    Started,
    Stop,
    Superseded,
    TakeOver,
    Transition,
    TurnRecord,
    step,
)

AGENT = "agent-1"
GRACE = 30.0
LEASE = 10.0

# ------------------------------------------------------------------ the states, at their reference times

ATTACHED = TurnRecord("turn-1", AGENT, "proc-A", lease_until=110.0, run_id="run-1", reader="conn-1")
"""Running, read by conn-1, owner proc-A live until 110 (looked at when ``now`` is LIVE)."""
LIVE = 105.0
STARTING = attrs.evolve(ATTACHED, run_id=None)
"""Claimed, Letta's run id not known yet."""
DETACHED = attrs.evolve(ATTACHED, reader=None, deadline=120.0)
"""Its client went away at 90 (grace 30): cancelled at 120 unless resumed."""
DETACHED_RENEWED = attrs.evolve(DETACHED, lease_until=130.0)
"""The same, the owner still renewing past the deadline."""
STOPPING = attrs.evolve(ATTACHED, stopping=True)
STOPPING_NO_RUN = attrs.evolve(STARTING, stopping=True)
ORPHANED = ATTACHED
"""The same record looked at once the lease ran out (``now`` is DEAD): proc-A died."""
DEAD = 115.0
DRAINED = attrs.evolve(ATTACHED, owner=None, lease_until=105.0, reader=None, deadline=135.0)
"""proc-A drained at 105 with grace 30 (looked at when ``now`` is AFTER_DRAIN)."""
AFTER_DRAIN = 110.0


def cancel(run_id: str | None = "run-1") -> Cancel:
    return Cancel(AGENT, run_id)


def fresh(turn_id: str, now: float, owner: str = "proc-B", reader: str = "conn-2") -> TurnRecord:
    return TurnRecord(turn_id, AGENT, owner, now + LEASE, reader=reader)


# ------------------------------------------------------------------ the table

# one row per transition: the table reads best unwrapped
# fmt: off
CASES: list[Any] = [
    # ---------------------------------------------------------- idle
    pytest.param(None, Claim("turn-1", "proc-A", "conn-1", LEASE), LIVE, fresh("turn-1", LIVE, "proc-A", "conn-1"), (), id="idle-claim-starts-a-turn"),
    pytest.param(None, Started("turn-1", "run-1"), LIVE, None, (), id="idle-started-ignored"),
    pytest.param(None, Renew("turn-1", "proc-A", LEASE), LIVE, None, (Lost("turn-1"),), id="idle-renew-lost"),
    pytest.param(None, Detach("turn-1", "conn-1", GRACE), LIVE, None, (), id="idle-detach-ignored"),
    pytest.param(None, Adopt("turn-1", "conn-2", "proc-B", LEASE), LIVE, None, (Replay("turn-1"),), id="idle-adopt-replays-the-log"),
    pytest.param(None, Stop(), LIVE, None, (), id="idle-stop-without-run-id-cancels-nothing"),
    pytest.param(None, Stop("run-9"), LIVE, None, (cancel("run-9"),), id="idle-stop-with-run-id"),
    pytest.param(None, Expire(GRACE), LIVE, None, (), id="idle-expire-noop"),
    pytest.param(None, Finish("turn-1", "proc-A"), LIVE, None, (), id="idle-finish-noop"),
    pytest.param(None, Drain("turn-1", "proc-A", GRACE), LIVE, None, (), id="idle-drain-noop"),
    # ---------------------------------------------------------- running, attached
    pytest.param(ATTACHED, Claim("turn-2", "proc-B", "conn-2", LEASE), LIVE, ATTACHED, (Refused("turn-1"),), id="attached-second-message-refused"),
    pytest.param(ATTACHED, Claim("turn-1", "proc-A", "conn-1", LEASE), LIVE, ATTACHED, (Refused("turn-1"),), id="attached-same-claim-again-refused"),
    pytest.param(STARTING, Started("turn-1", "run-1"), LIVE, ATTACHED, (), id="attached-started-records-run"),
    pytest.param(STARTING, Started("turn-0", "run-0"), LIVE, STARTING, (), id="attached-started-stale-turn-ignored"),
    pytest.param(ATTACHED, Renew("turn-1", "proc-A", LEASE), LIVE, attrs.evolve(ATTACHED, lease_until=LIVE + LEASE), (), id="attached-renew-extends-lease"),
    pytest.param(ATTACHED, Renew("turn-1", "proc-A", 1.0), LIVE, ATTACHED, (), id="attached-renew-never-shortens"),
    pytest.param(ATTACHED, Renew("turn-1", "proc-B", LEASE), LIVE, ATTACHED, (Lost("turn-1"),), id="attached-renew-by-non-owner-lost"),
    pytest.param(ATTACHED, Renew("turn-0", "proc-A", LEASE), LIVE, ATTACHED, (Lost("turn-0"),), id="attached-renew-stale-turn-lost"),
    pytest.param(ATTACHED, Detach("turn-1", "conn-1", GRACE), LIVE, attrs.evolve(ATTACHED, reader=None, deadline=LIVE + GRACE), (), id="attached-detach-starts-grace"),
    pytest.param(ATTACHED, Detach("turn-1", "conn-1", 0.0), LIVE, attrs.evolve(ATTACHED, reader=None, stopping=True), (cancel(),), id="attached-detach-no-grace-cancels"),
    pytest.param(STARTING, Detach("turn-1", "conn-1", 0.0), LIVE, attrs.evolve(STARTING, reader=None, stopping=True), (), id="attached-detach-no-grace-before-run-id"),
    pytest.param(ATTACHED, Detach("turn-1", "conn-9", 0.0), LIVE, ATTACHED, (), id="attached-detach-by-other-reader-ignored"),
    pytest.param(ATTACHED, Detach("turn-0", "conn-1", 0.0), LIVE, ATTACHED, (), id="attached-detach-stale-turn-ignored"),
    pytest.param(ATTACHED, Adopt("turn-1", "conn-2", "proc-B", LEASE), LIVE, attrs.evolve(ATTACHED, reader="conn-2"), (Superseded("conn-1"), Follow("turn-1")), id="attached-adopt-supersedes-and-follows"),
    pytest.param(ATTACHED, Adopt("turn-1", "conn-1", "proc-A", LEASE), LIVE, ATTACHED, (Follow("turn-1"),), id="attached-adopt-by-same-reader"),
    pytest.param(ATTACHED, Adopt("turn-0", "conn-2", "proc-B", LEASE), LIVE, ATTACHED, (Replay("turn-0"),), id="attached-adopt-finished-turn-replays"),
    pytest.param(ATTACHED, Stop(), LIVE, STOPPING, (cancel(),), id="attached-stop-cancels"),
    pytest.param(ATTACHED, Stop("run-1"), LIVE, STOPPING, (cancel(),), id="attached-stop-with-run-id"),
    pytest.param(STARTING, Stop(), LIVE, STOPPING_NO_RUN, (), id="attached-stop-before-run-id-waits-for-started"),
    pytest.param(STARTING, Stop("run-7"), LIVE, STOPPING_NO_RUN, (cancel("run-7"),), id="attached-stop-before-run-id-uses-clients"),
    pytest.param(ATTACHED, Expire(GRACE), LIVE, ATTACHED, (), id="attached-expire-noop"),
    pytest.param(ATTACHED, Finish("turn-1", "proc-A"), LIVE, None, (), id="attached-finish-frees"),
    pytest.param(ATTACHED, Finish("turn-1", "proc-B"), LIVE, ATTACHED, (Lost("turn-1"),), id="attached-finish-by-non-owner-lost"),
    pytest.param(ATTACHED, Finish("turn-0", "proc-A"), LIVE, ATTACHED, (), id="attached-finish-stale-turn-ignored"),
    pytest.param(ATTACHED, Drain("turn-1", "proc-A", GRACE), LIVE, attrs.evolve(ATTACHED, owner=None, lease_until=LIVE, reader=None, deadline=LIVE + GRACE), (), id="attached-drain-hands-off-without-cancel"),
    pytest.param(ATTACHED, Drain("turn-1", "proc-B", GRACE), LIVE, ATTACHED, (), id="attached-drain-by-non-owner-ignored"),
    pytest.param(ATTACHED, Drain("turn-0", "proc-A", GRACE), LIVE, ATTACHED, (), id="attached-drain-stale-turn-ignored"),
    # ---------------------------------------------------------- running, detached (within grace)
    pytest.param(DETACHED, Claim("turn-2", "proc-B", "conn-2", LEASE), LIVE, DETACHED, (Refused("turn-1"),), id="detached-claim-refused"),
    pytest.param(attrs.evolve(DETACHED, run_id=None), Started("turn-1", "run-1"), LIVE, DETACHED, (), id="detached-started-records-run"),
    pytest.param(DETACHED, Renew("turn-1", "proc-A", LEASE), LIVE, attrs.evolve(DETACHED, lease_until=LIVE + LEASE), (), id="detached-renew-keeps-deadline"),
    pytest.param(DETACHED, Renew("turn-1", "proc-B", LEASE), LIVE, DETACHED, (Lost("turn-1"),), id="detached-renew-by-non-owner-lost"),
    pytest.param(DETACHED, Detach("turn-1", "conn-1", 0.0), LIVE, DETACHED, (), id="detached-detach-again-ignored"),
    pytest.param(DETACHED, Adopt("turn-1", "conn-2", "proc-B", LEASE), LIVE, attrs.evolve(DETACHED, reader="conn-2", deadline=None), (Follow("turn-1"),), id="detached-adopt-within-grace-follows"),
    pytest.param(DETACHED, Adopt("turn-0", "conn-2", "proc-B", LEASE), LIVE, DETACHED, (Replay("turn-0"),), id="detached-adopt-stale-turn-replays"),
    pytest.param(DETACHED, Stop(), LIVE, attrs.evolve(STOPPING, reader=None), (cancel(),), id="detached-stop-cancels-at-once"),
    pytest.param(DETACHED, Expire(GRACE), LIVE, DETACHED, (), id="detached-expire-before-deadline-noop"),
    pytest.param(DETACHED_RENEWED, Expire(GRACE), 120.0, attrs.evolve(DETACHED_RENEWED, deadline=None, stopping=True), (cancel(),), id="detached-expire-at-deadline-cancels"),
    pytest.param(DETACHED_RENEWED, Expire(GRACE), 125.0, attrs.evolve(DETACHED_RENEWED, deadline=None, stopping=True), (cancel(),), id="detached-expire-after-deadline-cancels"),
    pytest.param(attrs.evolve(DETACHED_RENEWED, run_id=None), Expire(GRACE), 125.0, attrs.evolve(DETACHED_RENEWED, run_id=None, deadline=None, stopping=True), (), id="detached-expire-before-run-id"),
    pytest.param(DETACHED, Finish("turn-1", "proc-A"), LIVE, None, (), id="detached-finish-frees"),
    pytest.param(DETACHED, Finish("turn-0", "proc-A"), LIVE, DETACHED, (), id="detached-finish-stale-turn-ignored"),
    pytest.param(DETACHED, Drain("turn-1", "proc-A", GRACE), LIVE, attrs.evolve(DETACHED, owner=None, lease_until=LIVE, deadline=LIVE + GRACE), (), id="detached-drain-hands-off"),
    # ---------------------------------------------------------- stopping (cancel requested, owner live)
    pytest.param(STOPPING, Claim("turn-2", "proc-B", "conn-2", LEASE), LIVE, STOPPING, (Refused("turn-1"),), id="stopping-claim-refused"),
    pytest.param(STOPPING_NO_RUN, Started("turn-1", "run-1"), LIVE, STOPPING, (cancel(),), id="stopping-started-sends-pending-cancel"),
    pytest.param(STOPPING_NO_RUN, Started("turn-0", "run-0"), LIVE, STOPPING_NO_RUN, (), id="stopping-started-stale-turn-ignored"),
    pytest.param(STOPPING, Renew("turn-1", "proc-A", LEASE), LIVE, attrs.evolve(STOPPING, lease_until=LIVE + LEASE), (), id="stopping-renew-extends-lease"),
    pytest.param(STOPPING, Renew("turn-1", "proc-B", LEASE), LIVE, STOPPING, (Lost("turn-1"),), id="stopping-renew-by-non-owner-lost"),
    pytest.param(STOPPING, Detach("turn-1", "conn-1", GRACE), LIVE, attrs.evolve(STOPPING, reader=None), (), id="stopping-detach-no-grace-needed"),
    pytest.param(STOPPING, Detach("turn-1", "conn-1", 0.0), LIVE, attrs.evolve(STOPPING, reader=None), (), id="stopping-detach-no-second-cancel"),
    pytest.param(STOPPING, Adopt("turn-1", "conn-2", "proc-B", LEASE), LIVE, attrs.evolve(STOPPING, reader="conn-2"), (Superseded("conn-1"), Follow("turn-1")), id="stopping-adopt-follows-to-the-end"),
    pytest.param(STOPPING, Stop(), LIVE, STOPPING, (), id="stopping-stop-twice-noop"),
    pytest.param(STOPPING_NO_RUN, Stop("run-1"), LIVE, STOPPING_NO_RUN, (), id="stopping-stop-twice-before-run-id-noop"),
    pytest.param(STOPPING, Expire(GRACE), LIVE, STOPPING, (), id="stopping-expire-noop"),
    pytest.param(STOPPING, Finish("turn-1", "proc-A"), LIVE, None, (), id="stopping-finish-frees"),
    pytest.param(STOPPING, Finish("turn-1", "proc-B"), LIVE, STOPPING, (Lost("turn-1"),), id="stopping-finish-by-non-owner-lost"),
    pytest.param(STOPPING, Drain("turn-1", "proc-A", GRACE), LIVE, attrs.evolve(STOPPING, owner=None, lease_until=LIVE, reader=None, deadline=LIVE + GRACE), (), id="stopping-drain-keeps-stopping"),
    # ---------------------------------------------------------- orphaned: the owner's lease ran out (it died)
    pytest.param(ORPHANED, Claim("turn-2", "proc-B", "conn-2", LEASE), DEAD, fresh("turn-2", DEAD), (cancel(),), id="orphaned-claim-cancels-old-run-and-starts"),
    pytest.param(attrs.evolve(ORPHANED, run_id=None), Claim("turn-2", "proc-B", "conn-2", LEASE), DEAD, fresh("turn-2", DEAD), (), id="orphaned-claim-before-run-id"),
    pytest.param(ORPHANED, Claim("turn-2", "proc-B", "conn-2", LEASE), 110.0, fresh("turn-2", 110.0), (cancel(),), id="orphaned-claim-at-lease-end"),
    pytest.param(attrs.evolve(ORPHANED, run_id=None), Started("turn-1", "run-1"), DEAD, ORPHANED, (), id="orphaned-started-records-run"),
    pytest.param(ORPHANED, Renew("turn-1", "proc-A", LEASE), DEAD, attrs.evolve(ORPHANED, lease_until=DEAD + LEASE), (), id="orphaned-renew-by-late-owner-revives"),
    pytest.param(ORPHANED, Renew("turn-1", "proc-B", LEASE), DEAD, ORPHANED, (Lost("turn-1"),), id="orphaned-renew-by-non-owner-lost"),
    pytest.param(ORPHANED, Detach("turn-1", "conn-1", GRACE), DEAD, attrs.evolve(ORPHANED, reader=None, deadline=DEAD + GRACE), (), id="orphaned-detach-starts-grace"),
    pytest.param(ORPHANED, Detach("turn-1", "conn-1", 0.0), DEAD, attrs.evolve(ORPHANED, reader=None, stopping=True), (cancel(),), id="orphaned-detach-no-grace-cancels"),
    pytest.param(ORPHANED, Adopt("turn-1", "conn-2", "proc-B", LEASE), DEAD, attrs.evolve(ORPHANED, owner="proc-B", lease_until=DEAD + LEASE, reader="conn-2"), (Superseded("conn-1"), TakeOver("turn-1", "run-1")), id="orphaned-adopt-takes-over"),
    pytest.param(ORPHANED, Adopt("turn-1", "conn-1", "proc-B", LEASE), DEAD, attrs.evolve(ORPHANED, owner="proc-B", lease_until=DEAD + LEASE), (TakeOver("turn-1", "run-1"),), id="orphaned-readopt-by-same-reader-takes-over"),
    pytest.param(attrs.evolve(ORPHANED, run_id=None), Adopt("turn-1", "conn-1", "proc-B", LEASE), DEAD, attrs.evolve(ORPHANED, run_id=None, owner="proc-B", lease_until=DEAD + LEASE), (TakeOver("turn-1", None),), id="orphaned-adopt-before-run-id"),
    pytest.param(ORPHANED, Adopt("turn-0", "conn-2", "proc-B", LEASE), DEAD, ORPHANED, (Replay("turn-0"),), id="orphaned-adopt-stale-turn-replays"),
    pytest.param(ORPHANED, Stop(), DEAD, None, (cancel(),), id="orphaned-stop-cancels-and-frees"),
    pytest.param(STOPPING_NO_RUN, Stop(), DEAD, None, (), id="orphaned-stopping-stop-again-frees"),
    pytest.param(ATTACHED, Stop("run-0"), LIVE, ATTACHED, (cancel("run-0"),), id="attached-late-stop-of-an-older-run-spares-this-turn"),
    pytest.param(ORPHANED, Expire(GRACE), DEAD, ORPHANED, (), id="orphaned-expire-within-grace-noop"),
    pytest.param(ORPHANED, Expire(GRACE), 140.0, None, (cancel(),), id="orphaned-expire-after-lease-and-grace-cancels"),
    pytest.param(STOPPING, Expire(GRACE), 140.0, None, (cancel(),), id="orphaned-stopping-expire-frees"),
    pytest.param(DETACHED, Expire(GRACE), DEAD, DETACHED, (), id="orphaned-detached-expire-before-deadline-noop"),
    pytest.param(DETACHED, Expire(GRACE), 120.0, None, (cancel(),), id="orphaned-detached-expire-at-deadline-cancels"),
    pytest.param(DETACHED, Adopt("turn-1", "conn-2", "proc-B", LEASE), DEAD, attrs.evolve(DETACHED, owner="proc-B", lease_until=DEAD + LEASE, reader="conn-2", deadline=None), (TakeOver("turn-1", "run-1"),), id="orphaned-detached-adopt-takes-over"),
    pytest.param(ORPHANED, Finish("turn-1", "proc-A"), DEAD, None, (), id="orphaned-finish-by-late-owner-frees"),
    pytest.param(ORPHANED, Drain("turn-1", "proc-A", GRACE), DEAD, attrs.evolve(ORPHANED, owner=None, lease_until=DEAD, reader=None, deadline=DEAD + GRACE), (), id="orphaned-drain-by-late-owner"),
    # ---------------------------------------------------------- drained: left for a resumer on another replica
    pytest.param(DRAINED, Claim("turn-2", "proc-B", "conn-2", LEASE), AFTER_DRAIN, fresh("turn-2", AFTER_DRAIN), (cancel(),), id="drained-claim-cancels-and-starts"),
    pytest.param(attrs.evolve(DRAINED, run_id=None), Started("turn-1", "run-1"), AFTER_DRAIN, DRAINED, (), id="drained-started-records-run"),
    pytest.param(DRAINED, Renew("turn-1", "proc-A", LEASE), AFTER_DRAIN, DRAINED, (Lost("turn-1"),), id="drained-renew-by-old-owner-lost"),
    pytest.param(DRAINED, Detach("turn-1", "conn-1", 0.0), AFTER_DRAIN, DRAINED, (), id="drained-detach-ignored"),
    pytest.param(DRAINED, Adopt("turn-1", "conn-2", "proc-B", LEASE), AFTER_DRAIN, attrs.evolve(DRAINED, owner="proc-B", lease_until=AFTER_DRAIN + LEASE, reader="conn-2", deadline=None), (TakeOver("turn-1", "run-1"),), id="drained-adopt-takes-over"),
    pytest.param(DRAINED, Adopt("turn-0", "conn-2", "proc-B", LEASE), AFTER_DRAIN, DRAINED, (Replay("turn-0"),), id="drained-adopt-stale-turn-replays"),
    pytest.param(DRAINED, Stop(), AFTER_DRAIN, None, (cancel(),), id="drained-stop-cancels-and-frees"),
    pytest.param(DRAINED, Expire(GRACE), AFTER_DRAIN, DRAINED, (), id="drained-expire-within-grace-noop"),
    pytest.param(DRAINED, Expire(GRACE), 135.0, None, (cancel(),), id="drained-expire-after-grace-cancels"),
    pytest.param(DRAINED, Finish("turn-1", "proc-A"), AFTER_DRAIN, DRAINED, (Lost("turn-1"),), id="drained-finish-by-old-owner-lost"),
    pytest.param(DRAINED, Drain("turn-1", "proc-A", GRACE), AFTER_DRAIN, DRAINED, (), id="drained-drain-again-ignored"),
]
# fmt: on


@pytest.mark.parametrize(("record", "event", "now", "expected", "effects"), CASES)
def test_transition(
    record: TurnRecord | None, event: Input, now: float, expected: TurnRecord | None, effects: tuple[Effect, ...]
) -> None:
    transition = step(record, event, AGENT, now)
    assert transition.record == expected
    assert transition.effects == effects


def test_the_table_covers_every_input_in_every_state() -> None:
    states = {param.id.split("-", 1)[0] for param in CASES}
    assert states == {"idle", "attached", "detached", "stopping", "orphaned", "drained"}
    for state in states:
        kinds = {type(param.values[1]) for param in CASES if param.id.split("-", 1)[0] == state}
        assert kinds == {Claim, Started, Renew, Detach, Adopt, Stop, Expire, Finish, Drain}, state


# ------------------------------------------------------------------ the README's promises, as sequences


def run(record: TurnRecord | None, *inputs: tuple[float, Input]) -> tuple[TurnRecord | None, list[Transition]]:
    transitions = []
    for now, event in inputs:
        transition = step(record, event, AGENT, now)
        transitions.append(transition)
        record = transition.record
    return record, transitions


def cancels(transitions: list[Transition]) -> list[Cancel]:
    return [e for t in transitions for e in t.effects if isinstance(e, Cancel)]


def test_client_drops_then_grace_then_cancel() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Started("turn-1", "run-1")),
        (5.0, Detach("turn-1", "conn-1", GRACE)),
        (9.0, Renew("turn-1", "proc-A", LEASE)),
        (20.0, Expire(GRACE)),  # a stray timer before the deadline
        (27.0, Renew("turn-1", "proc-A", LEASE)),
        (34.0, Renew("turn-1", "proc-A", LEASE)),
        (34.9, Expire(GRACE)),
    )
    assert cancels(ts) == []
    assert record is not None
    assert record.deadline == 35.0
    record, ts = run(record, (35.0, Expire(GRACE)))
    assert cancels(ts) == [cancel()]
    assert record is not None
    assert record.stopping
    record, ts = run(record, (36.0, Expire(GRACE)), (37.0, Finish("turn-1", "proc-A")))
    assert cancels(ts) == []
    assert record is None


def test_drop_then_resume_elsewhere_within_grace_the_old_timer_cancels_nothing() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Started("turn-1", "run-1")),
        (5.0, Detach("turn-1", "conn-1", GRACE)),
        (8.0, Adopt("turn-1", "conn-2", "proc-B", LEASE)),
        (9.0, Renew("turn-1", "proc-A", LEASE)),
        (35.0, Expire(GRACE)),  # proc-A's timer for conn-1's deadline
        (36.0, Detach("turn-1", "conn-1", 0.0)),  # a late duplicate of conn-1's drop
    )
    assert ts[3].effects == (Follow("turn-1"),)
    assert cancels(ts) == []
    assert record is not None
    assert record.reader == "conn-2"
    assert record.deadline is None
    assert not record.stopping


def test_resume_after_the_owner_died_takes_over_and_the_late_owner_is_told() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Started("turn-1", "run-1")),
        (12.0, Adopt("turn-1", "conn-2", "proc-B", LEASE)),
        (13.0, Renew("turn-1", "proc-A", LEASE)),  # proc-A was only frozen
        (14.0, Finish("turn-1", "proc-A")),
        (14.5, Detach("turn-1", "conn-1", 0.0)),
        (15.0, Expire(GRACE)),
    )
    assert ts[2].effects == (Superseded("conn-1"), TakeOver("turn-1", "run-1"))
    assert ts[3].effects == (Lost("turn-1"),)
    assert ts[4].effects == (Lost("turn-1"),)
    assert cancels(ts) == []
    assert record == TurnRecord("turn-1", AGENT, "proc-B", 22.0, run_id="run-1", reader="conn-2")
    record, ts = run(record, (20.0, Renew("turn-1", "proc-B", LEASE)), (25.0, Finish("turn-1", "proc-B")))
    assert record is None
    assert cancels(ts) == []


def test_stop_before_the_run_id_is_known_cancels_at_started() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (0.5, Stop()),
        (0.6, Stop()),
    )
    assert cancels(ts) == []
    record, ts = run(record, (1.0, Started("turn-1", "run-1")))
    assert ts[0].effects == (cancel(),)
    record, ts = run(record, (2.0, Claim("turn-2", "proc-B", "conn-2", LEASE)), (3.0, Finish("turn-1", "proc-A")))
    assert ts[0].effects == (Refused("turn-1"),)
    assert record is None


def test_stop_while_detached_cancels_at_once_and_the_deadline_is_dropped() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Started("turn-1", "run-1")),
        (2.0, Detach("turn-1", "conn-1", GRACE)),
        (3.0, Stop("run-1")),
        (4.0, Stop("run-1")),
        (8.0, Renew("turn-1", "proc-A", LEASE)),
        (32.0, Expire(GRACE)),
    )
    assert cancels(ts) == [cancel()]
    assert record is not None
    assert record.stopping
    assert record.deadline is None


def test_drain_then_resume_on_another_replica_takes_over() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Started("turn-1", "run-1")),
        (5.0, Drain("turn-1", "proc-A", GRACE)),
        (5.5, Detach("turn-1", "conn-1", GRACE)),  # the drained process's stream ends
        (6.0, Renew("turn-1", "proc-A", LEASE)),
        (20.0, Expire(GRACE)),
        (21.0, Adopt("turn-1", "conn-2", "proc-B", LEASE)),
    )
    assert cancels(ts) == []
    assert ts[4].effects == (Lost("turn-1"),)
    assert ts[-1].effects == (TakeOver("turn-1", "run-1"),)
    assert record == TurnRecord("turn-1", AGENT, "proc-B", 31.0, run_id="run-1", reader="conn-2")
    record, ts = run(record, (60.0, Expire(GRACE)))  # proc-A's old drain deadline (35) is long gone
    assert cancels(ts) == []


def test_drain_then_nobody_resumes_expires_and_frees() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Started("turn-1", "run-1")),
        (5.0, Drain("turn-1", "proc-A", GRACE)),
        (34.0, Expire(GRACE)),
    )
    assert cancels(ts) == []
    assert record is not None
    assert record.check_at(GRACE) == 35.0
    record, ts = run(record, (35.0, Expire(GRACE)))
    assert ts[0].effects == (cancel(),)
    assert record is None


def test_a_second_message_while_busy_is_refused_until_the_owner_finishes() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Claim("turn-2", "proc-B", "conn-2", LEASE)),
        (2.0, Finish("turn-1", "proc-B")),
        (3.0, Claim("turn-2", "proc-B", "conn-2", LEASE)),
        (4.0, Finish("turn-1", "proc-A")),
        (5.0, Claim("turn-2", "proc-B", "conn-2", LEASE)),
    )
    assert [t.first(Refused) for t in ts[1:4]] == [Refused("turn-1"), None, Refused("turn-1")]
    assert ts[4].record is None
    assert record == fresh("turn-2", 5.0)
    assert ts[5].effects == ()


def test_a_dead_owner_frees_its_agent_for_the_next_message_within_the_lease() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Started("turn-1", "run-1")),
        (9.9, Claim("turn-2", "proc-B", "conn-2", LEASE)),
        (10.0, Claim("turn-2", "proc-B", "conn-2", LEASE)),
        (10.5, Started("turn-1", "run-1")),  # the old turn's late inputs change nothing
        (10.6, Detach("turn-1", "conn-1", 0.0)),
        (10.7, Finish("turn-1", "proc-A")),
    )
    assert ts[2].effects == (Refused("turn-1"),)
    assert ts[3].effects == (cancel(),)
    assert cancels(ts) == [cancel()]
    assert record == fresh("turn-2", 10.0)


def test_a_second_resumer_supersedes_the_first_whose_drop_is_then_ignored() -> None:
    record, ts = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Detach("turn-1", "conn-1", GRACE)),
        (2.0, Adopt("turn-1", "conn-2", "proc-B", LEASE)),
        (3.0, Adopt("turn-1", "conn-3", "proc-C", LEASE)),
        (4.0, Detach("turn-1", "conn-2", 0.0)),
    )
    assert ts[2].effects == (Follow("turn-1"),)
    assert ts[3].effects == (Superseded("conn-2"), Follow("turn-1"))
    assert ts[4].effects == ()
    assert cancels(ts) == []
    assert record is not None
    assert record.reader == "conn-3"


# ------------------------------------------------------------------ check_at / expires_at


def test_check_at_and_expires_at() -> None:
    # attached: looked at grace after the lease, forgotten a margin later
    assert ATTACHED.check_at(GRACE) == 140.0
    assert ATTACHED.expires_at(GRACE) == 200.0
    assert ATTACHED.expires_at(GRACE, margin=5.0) == 145.0
    # detached: looked at at its deadline
    assert DETACHED.check_at(GRACE) == 120.0
    assert DETACHED.expires_at(GRACE) == 180.0
    # drained: its deadline (the lease ended when it drained)
    assert DRAINED.check_at(GRACE) == 135.0
    assert DRAINED.expires_at(GRACE) == 195.0


def test_owned_is_strict_at_the_lease_end() -> None:
    assert ATTACHED.owned(109.999)
    assert not ATTACHED.owned(110.0)
    assert not DRAINED.owned(100.0)


def test_a_renewing_owner_keeps_its_record_past_the_safety_net() -> None:
    """A detached turn whose Expire is late: the store must not forget a record whose lease is live."""
    record, _ = run(
        None,
        (0.0, Claim("turn-1", "proc-A", "conn-1", LEASE)),
        (1.0, Detach("turn-1", "conn-1", GRACE)),  # deadline 31
        *((float(t), Renew("turn-1", "proc-A", LEASE)) for t in range(5, 100, 3)),
    )
    assert record is not None
    assert record.owned(100.0)
    assert record.expires_at(GRACE) > record.lease_until


def test_the_transition_helper_finds_the_first_effect_of_a_kind() -> None:
    transition = Transition(ATTACHED, (Superseded("conn-1"), Follow("turn-1")))
    assert transition.first(Follow) == Follow("turn-1")
    assert transition.first(Cancel) is None


# ------------------------------------------------------------------ properties of random sequences

CURRENT, PREVIOUS, OWNER, READER = "@current", "@previous", "@owner", "@reader"
"""Names resolved when the input is applied: the agent's turn now, the one before it, its owner, its reader."""
TURNS = (CURRENT, CURRENT, CURRENT, PREVIOUS, "turn-unknown")
OWNERS = ("proc-A", "proc-B", "proc-C")
READERS = ("conn-1", "conn-2", "conn-3")
RUNS = ("run-1", "run-2")

detaches = st.builds(
    Detach, st.sampled_from(TURNS), st.sampled_from((READER, READER, *READERS)), st.sampled_from((0.0, GRACE, GRACE))
)
adopts = st.builds(
    Adopt, st.sampled_from(TURNS), st.sampled_from((READER, *READERS)), st.sampled_from(OWNERS), st.just(LEASE)
)
inputs = st.one_of(
    st.builds(Claim, st.just("new"), st.sampled_from(OWNERS), st.sampled_from(READERS), st.just(LEASE)),
    st.builds(Started, st.sampled_from(TURNS), st.sampled_from(RUNS)),
    st.builds(Renew, st.sampled_from(TURNS), st.sampled_from((OWNER, OWNER, OWNER, *OWNERS)), st.just(LEASE)),
    detaches,
    detaches,  # drops, resumes and timers are where the guarantees are: drawn more often
    adopts,
    adopts,
    st.builds(Stop, st.sampled_from((None, *RUNS))),
    st.just(Expire(GRACE)),
    st.just(Expire(GRACE)),
    st.builds(Finish, st.sampled_from(TURNS), st.sampled_from((OWNER, OWNER, *OWNERS))),
    st.builds(Drain, st.sampled_from(TURNS), st.sampled_from((OWNER, OWNER, *OWNERS)), st.just(GRACE)),
)
delays = st.one_of(
    st.sampled_from((0.0, 0.5, 1.0, 3.0, LEASE - 0.01, LEASE, GRACE, GRACE + LEASE, 60.0, 200.0)),
    st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=40.0, allow_nan=False),
)


def resolve(template: Input, record: TurnRecord | None, turns: list[str], readers: list[str]) -> Input:
    """The input with its symbolic names replaced by the agent's turn, owner and reader now (or lately)."""
    names = {
        CURRENT: record.turn_id if record is not None else turns[-1],
        PREVIOUS: turns[-2] if len(turns) > 1 else "turn-unknown",
        OWNER: (record.owner if record is not None else None) or "proc-A",
        READER: (record.reader if record is not None else None) or readers[-1],
    }
    changes = {
        field: names[value]
        for field in ("turn_id", "owner", "reader")
        if isinstance(value := getattr(template, field, None), str) and value in names
    }
    return attrs.evolve(template, **changes) if changes else template


def check_transition(
    pre: TurnRecord | None, event: Input, now: float, t: Transition, cancelled: set[tuple[str, str]]
) -> None:
    post = t.record
    effect_cancels = [e for e in t.effects if isinstance(e, Cancel)]
    assert all(c.agent_id == AGENT for c in effect_cancels)

    # one turn at a time: a new turn id only by a claim that was not refused (the old turn is replaced)
    claimed = isinstance(event, Claim) and t.first(Refused) is None
    if post is not None and not claimed:
        assert pre is not None
        assert post.turn_id == pre.turn_id

    # a record is never kept forever, and never forgotten while its owner holds a lease
    if post is not None:
        assert post.agent_id == AGENT
        assert post.check_at(GRACE) < post.expires_at(GRACE) < float("inf")
        assert now < post.expires_at(GRACE)
        if post.owned(now):
            assert post.expires_at(GRACE) > post.lease_until
        # shape: an attached turn has no deadline; a turn nobody runs has one (or is stopping)
        if post.reader is not None:
            assert post.deadline is None
        if post.owner is None:
            assert post.deadline is not None
        if post.owned(now) and post.stopping:
            assert post.deadline is None

    # the deadline timer never spins: after Expire the record is gone or due later
    if isinstance(event, Expire) and post is not None:
        assert post.check_at(GRACE) > now
    # ... and Expire cancels only a detached turn past its deadline, or one nobody runs past its check time
    if isinstance(event, Expire) and effect_cancels:
        assert pre is not None
        if pre.owned(now):
            assert pre.deadline is not None
            assert now >= pre.deadline
            assert not pre.stopping
        else:
            assert now >= pre.check_at(GRACE)

    # a served turn is never cancelled, except by the stop button or a drop with no grace
    served = pre is not None and pre.reader is not None and pre.owned(now) and not pre.stopping
    if served and not isinstance(event, Stop) and not (isinstance(event, Detach) and event.grace <= 0):
        assert effect_cancels == []

    # refused only while the existing owner is live, and then nothing changes
    if t.first(Refused) is not None:
        assert isinstance(event, Claim)
        assert pre is not None
        assert pre.owned(now)
        assert t == Transition(pre, (Refused(pre.turn_id),))
    if isinstance(event, Claim) and t.first(Refused) is None:
        assert post is not None
        assert post.turn_id == event.turn_id
        assert post.owner == event.owner
        assert post.reader == event.reader
        assert post.lease_until == now + event.lease
        assert post.run_id is None
        assert not post.stopping
        assert post.deadline is None
        if pre is not None:  # the old turn's run is cancelled (never "the agent's current run": the new turn's)
            assert effect_cancels == ([Cancel(AGENT, pre.run_id)] if pre.run_id is not None else [])
    assert all(c.run_id is not None for c in effect_cancels)

    # inputs of a turn that is not the current one change nothing
    if isinstance(event, Started | Renew | Detach | Finish | Drain | Adopt) and (
        pre is None or pre.turn_id != event.turn_id
    ):
        assert post == pre
        assert effect_cancels == []
        if isinstance(event, Adopt):
            assert t.effects == (Replay(event.turn_id),)

    # Lost leaves the record as it is
    if t.first(Lost) is not None:
        assert post == pre

    # after Finish by the owner the agent is idle
    if isinstance(event, Finish) and pre is not None and pre.turn_id == event.turn_id and pre.owner == event.owner:
        assert post is None
        assert t.effects == ()

    # an adopt is followed when the owner lives, taken over (with a fresh lease) when it does not
    if isinstance(event, Adopt) and pre is not None and pre.turn_id == event.turn_id:
        assert post is not None
        assert post.reader == event.reader
        assert post.deadline is None
        superseded = [e for e in t.effects if isinstance(e, Superseded)]
        expected = [Superseded(pre.reader)] if pre.reader is not None and pre.reader != event.reader else []
        assert superseded == expected
        if pre.owned(now):
            assert t.first(Follow) == Follow(pre.turn_id)
            assert post.owner == pre.owner
        else:
            assert t.first(TakeOver) == TakeOver(pre.turn_id, pre.run_id)
            assert post.owner == event.owner
            assert post.lease_until == now + event.lease
        assert effect_cancels == []

    # a stop request is never forgotten: stopping stays; once the run is known it has been cancelled
    for c in effect_cancels:
        if pre is not None and c.run_id is not None:
            cancelled.add((pre.turn_id, c.run_id))
    if pre is not None and post is not None and pre.turn_id == post.turn_id and pre.stopping:
        assert post.stopping
    if post is not None and post.stopping and post.run_id is not None:
        assert (post.turn_id, post.run_id) in cancelled

    # the stop button always reaches Letta, or waits for the run id with the record stopping
    if isinstance(event, Stop):
        assert (
            effect_cancels
            or (post is not None and post.stopping and pre is not None and (pre.stopping or pre.run_id is None))
            or ((pre is None or not pre.owned(now)) and (pre is None or pre.run_id is None) and event.run_id is None)
        )  # nothing to cancel yet is remembered, except a run nobody will ever learn

    # without renewals, every turn is given up by its check time: no agent stays busy forever
    if post is not None:
        later = max(post.lease_until, post.check_at(GRACE))
        assert step(post, Expire(GRACE), AGENT, later).record is None


def state_of(record: TurnRecord | None, now: float) -> str:
    if record is None:
        return "idle"
    if record.owner is None:
        return "drained"
    if not record.owned(now):
        return "orphaned"
    if record.stopping:
        return "stopping"
    return "attached" if record.reader is not None else "detached"


@attrs.define
class Agent:
    """One agent's record as a store keeps it, fed random inputs; every transition is checked."""

    now: float
    record: TurnRecord | None = None
    cancelled: set[tuple[str, str]] = attrs.Factory(set)
    """(turn, run) pairs whose cancel was emitted."""
    turns: list[str] = attrs.Factory(lambda: ["turn-0"])
    """Every turn id the agent had (every message gets a new one)."""
    readers: list[str] = attrs.Factory(lambda: ["conn-0"])
    """Every connection that read its turns."""

    def apply(self, event: Input) -> None:
        # the store forgets a record at its expiry (a safety net), never one whose owner still holds a lease
        if self.record is not None and self.now >= self.record.expires_at(GRACE):
            assert not self.record.owned(self.now)
            self.record = None
        transition = step(self.record, event, AGENT, self.now)
        check_transition(self.record, event, self.now, transition, self.cancelled)
        effects = sorted({type(e).__name__ for e in transition.effects})
        label(f"{state_of(self.record, self.now)} + {type(event).__name__} -> {effects}")
        self.record = transition.record

    def wait(self, delay: float, owner_alive: bool) -> None:
        """Let ``delay`` pass; a live owner renews its lease every third of it meanwhile (as the driver does)."""
        until = self.now + delay
        while owner_alive and self.record is not None and self.record.owned(self.now) and self.now + LEASE / 3 < until:
            self.now += LEASE / 3
            assert self.record.owner is not None
            self.apply(Renew(self.record.turn_id, self.record.owner, LEASE))
        self.now = until

    def receive(self, template: Input) -> None:
        if isinstance(template, Claim):
            event: Input = attrs.evolve(template, turn_id=f"turn-{len(self.turns)}")
            self.turns.append(event.turn_id)
        else:
            event = resolve(template, self.record, self.turns, self.readers)
        if isinstance(event, Claim | Adopt):
            self.readers.append(event.reader)
        self.apply(event)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.tuples(delays, st.sampled_from((True, True, False)), inputs), min_size=1, max_size=50),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
)
def test_random_sequences_keep_the_invariants(sequence: list[tuple[float, bool, Input]], start: float) -> None:
    agent = Agent(now=start)
    agent.receive(Claim("new", "proc-A", "conn-1", LEASE))  # idle is the table's; start from a turn
    for delay, owner_alive, template in sequence:
        agent.wait(delay, owner_alive)
        agent.receive(template)
