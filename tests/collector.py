"""What a test needs to see cycles: the garbage collector held off, and the live objects of some types.

With the collector disabled, objects in a reference cycle stay in its lists after their
last outside reference is gone, where :func:`gc.get_objects` still finds them; objects
freed by reference counting are gone at once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_held() -> Iterator[None]:
    """Collect once, then keep the collector off until the block ends (it is on again however it ends)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def alive(*kinds: type) -> list[str]:
    """The type names of every object the collector tracks that is an instance of one of ``kinds``."""
    return [type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)]
