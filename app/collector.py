"""The garbage collector, tuned for a process that holds thousands of long-lived streams.

CPython collects its youngest generation every 700 net allocations, and the whole heap
whenever the survivors since the last full pass reach a quarter of it.  A streaming
service allocates a few dozen short-lived objects per event, and each open stream keeps
some hundreds alive for minutes: with 2,000 streams open, full passes of a second and
more stalled the event loop (measured with ``bench.service_proc --diagnose``), and every
keepalive due during one went out late.

:func:`tune` is called once the app has started: it collects once, **freezes** what
startup built (modules, clients, the agent index: never garbage, now never scanned
again), and raises the young threshold so that young passes are rarer and each stream's
objects are usually gone before they are promoted.  A middle pass comes every 4 young
ones (CPython: 10): what a burst of new streams promotes is scanned in several passes of
~0.1 to 0.2 s instead of one of 0.5 to 0.7 s (at 20, measured with 2,000 streams opened in 3.5 s:
that one pass made a 1 s keepalive late on up to 215 streams; at 4, none).  It acts once per process; later
calls (a test process builds many apps) return the first outcome.
"""

from __future__ import annotations

import gc
import logging

import attrs

log = logging.getLogger(__name__)

MIDDLE_THRESHOLD = 4  # young passes per middle pass (CPython: 10)
OLD_THRESHOLD = 100  # middle passes before a full pass is considered (CPython: 10)


@attrs.frozen
class Tuning:
    """What :func:`tune` did: the thresholds it set, and how many objects it froze."""

    thresholds: tuple[int, int, int]
    frozen: int


_done: Tuning | None = None


def tune(young: int) -> Tuning | None:
    """Freeze the startup heap and set the thresholds to ``(young, 4, 100)``; ``young <= 0`` leaves
    CPython's defaults (returns None).  Once per process: a second call returns the first result."""
    global _done
    if young <= 0:
        return None
    if _done is None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(young, MIDDLE_THRESHOLD, OLD_THRESHOLD)
        _done = Tuning(gc.get_threshold(), gc.get_freeze_count())
        log.info("garbage collector: %d startup objects frozen, thresholds %s", _done.frozen, _done.thresholds)
    return _done
