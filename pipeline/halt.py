"""A halt: a signal that ends many readers at once, without a task each.

A server that drains ends every open stream at once.  Waiting on an event would cost
each stream a task of its own, for the whole life of the stream, only to notice one
moment at its end.  A :class:`Halt` instead keeps the cancel scopes of the readers
watching it; :meth:`Halt.set` cancels them all (from any task of the same thread).

Contract: a scope entered with :meth:`Halt.watching` is cancelled when the halt is set,
also when it was set before; it is forgotten when its block ends.  Any other object
with a ``cancel()`` method (a response body that ends itself, say) may watch too:
:meth:`Halt.add` calls its ``cancel()`` when the halt is set (at once if it is set
already) until :meth:`Halt.discard`.  :meth:`Halt.set` is idempotent and never waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import anyio


class Cancellable(Protocol):
    """What watches a halt: ``cancel()`` is called once the halt is set (it must not wait)."""

    def cancel(self) -> None: ...


class Halt:
    """A one-way signal: not set, then set for good."""

    def __init__(self) -> None:
        self._set = False
        self._watchers: set[Cancellable] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the halt: every watcher is cancelled."""
        self._set = True
        for watcher in list(self._watchers):
            watcher.cancel()

    @property
    def watchers(self) -> int:
        """How many scopes and other watchers watch the halt now."""
        return len(self._watchers)

    def add(self, watcher: Cancellable) -> None:
        """Call ``watcher.cancel()`` when the halt is set (now, if it is set already)."""
        self._watchers.add(watcher)
        if self._set:
            watcher.cancel()

    def discard(self, watcher: Cancellable) -> None:
        """Forget ``watcher`` (nothing if it was not watching)."""
        self._watchers.discard(watcher)

    @contextmanager
    def watching(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that the halt cancels; ``scope.cancelled_caught`` tells whether it ended the block."""
        with anyio.CancelScope() as scope:
            if self._set:
                scope.cancel()
            self._watchers.add(scope)
            try:
                yield scope
            finally:
                self._watchers.discard(scope)
