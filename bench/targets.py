"""The services every throughput figure compares, started once against one emulator.

Ours as deployed (``bench/service_proc.py``) with the throttle off and at its default
50 ms window, and the plan's design (``bench/comparator_app.py``) with letta-client's
default pool and with the pool raised to 4096; for the classroom also the floor
(``bench/floor_app.py``: the card's stack with nothing of ours).  Adapting the bench to a
changed app means changing :func:`ours` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .comparator import PLAN, PLAN_POOL, comparator
from .procs import Child

OURS_W0 = "ours w=0"
OURS = "ours w=50ms"
FLOOR = "floor (Quart+hypercorn, bare)"
"""The card's stack with nothing of ours (``bench/floor_app.py``): a lower bound, reported beside the targets."""


def ours(emulator: Child, log: Path, *args: str) -> Child:
    """letta-stream in its own process, against the emulator."""
    return Child("bench.service_proc", "--letta", emulator.url, *args, health="/health", log=log)


def floor(emulator: Child, log: Path) -> Child:
    """The floor app in its own process, against the emulator, with the default 50 ms window."""
    return Child("bench.floor_app", "--letta", emulator.url, health="/health", log=log)


@contextlib.contextmanager
def started(emulator: Child, log_dir: Path) -> Iterator[dict[str, Child]]:
    children = {
        OURS_W0: ours(emulator, log_dir / "service-w0.log", "--window", "0"),
        OURS: ours(emulator, log_dir / "service-w50.log", "--window", "0.05"),
        PLAN: comparator(emulator.url, 0, log_dir / "plan.log"),
        PLAN_POOL: comparator(emulator.url, 4096, log_dir / "plan-4096.log"),
    }
    with contextlib.ExitStack() as stack:
        for child in children.values():
            stack.enter_context(child)
        yield children
