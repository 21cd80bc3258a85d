"""A stop signal many readers watch without a task each.

A server that drains ends every open stream at once.  Waiting on an event would cost
each stream a task of its own, for the whole life of the stream, only to notice one
moment at its end.  A :class:`Stop` instead keeps the cancel scopes of the readers
watching it; :meth:`Stop.set` cancels them all (from any task of the same thread).

Contract: a scope entered with :meth:`Stop.watching` is cancelled when the stop is set,
also when it was set before; it is forgotten when its block ends.  :meth:`Stop.set` is
idempotent and never waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class Stop:
    """A one-way signal: not set, then set for good."""

    def __init__(self) -> None:
        self._set = False
        self._scopes: set[anyio.CancelScope] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the stop: every watching scope is cancelled."""
        self._set = True
        for scope in list(self._scopes):
            scope.cancel()

    @property
    def watchers(self) -> int:
        """How many scopes watch the stop now."""
        return len(self._scopes)

    @contextmanager
    def watching(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that the stop cancels; ``scope.cancelled_caught`` tells whether it ended the block."""
        with anyio.CancelScope() as scope:
            if self._set:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)
