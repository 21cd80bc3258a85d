"""The services every throughput figure compares, started once against one emulator.

Ours as deployed (``bench/service_proc.py``) with the throttle off and at its default
50 ms window, and the plan's design (``bench/comparator_app.py``) with letta-client's
default pool and with the pool raised to 4096.  Adapting the bench to a changed app means
changing :func:`ours` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .comparator import PLAN, PLAN_POOL, comparator
from .procs import Child

OURS_W0 = "ours w=0"
OURS = "ours w=50ms"


def ours(emulator: Child, log: Path, *args: str) -> Child:
    """letta-stream in its own process, against the emulator."""
    return Child("bench.service_proc", "--letta", emulator.url, *args, health="/health", log=log)


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
