"""Merging text deltas into fewer, larger frames, as a pure state machine.

OpenWebUI re-serialises the whole message for every streamed chunk, so a frame per
token is expensive for it.  :class:`Coalescer` holds consecutive deltas of one kind
(answer text or reasoning) and releases them as one event when the window since the
first of them has passed, when they reach ``max_chars``, or at once when any other
event arrives — so order is kept and a status or tool event never waits behind text.
Merged text carries the resume position (``cursor``) of its last part.

It is told the time (``now``) rather than reading a clock, so it is tested without
an event loop; the :func:`pipeline.throttle.throttle` stage drives it.
"""

from __future__ import annotations

from collections import deque

import attrs

from .events import Event, Reasoning, Text

Delta = Text | Reasoning


@attrs.define
class Coalescer:
    """Buffers events; text deltas of one kind are merged.

    ``window`` and ``max_chars`` decide when merged text is released.  ``max_backlog``
    (events ready to send) and ``max_buffered_chars`` (text held in total) bound the
    memory: :attr:`full` tells the producer to stop pushing until :meth:`take` drains.
    """

    window: float = 0.05
    max_chars: int = 4096
    max_backlog: int = 32
    max_buffered_chars: int = 65536
    _ready: deque[Event] = attrs.field(factory=deque, init=False)
    _ready_chars: int = attrs.field(default=0, init=False)
    _kind: type[Delta] | None = attrs.field(default=None, init=False)
    _parts: list[str] = attrs.field(factory=list, init=False)
    _pending_chars: int = attrs.field(default=0, init=False)
    _cursor: str | None = attrs.field(default=None, init=False)
    _since: float = attrs.field(default=0.0, init=False)

    def push(self, event: Event, now: float) -> None:
        """Accept ``event``, which arrived at ``now``."""
        if isinstance(event, (Text, Reasoning)):
            if self._kind is not type(event):
                self._release()
                self._kind = type(event)
                self._since = now
            self._parts.append(event.content)
            self._cursor = event.cursor if event.cursor is not None else self._cursor
            self._pending_chars += len(event.content)
            if self._pending_chars >= self.max_chars:
                self._release()
        else:
            self._release()
            self._ready.append(event)

    def take(self, now: float) -> list[Event]:
        """Everything that may be sent at ``now``, in order (held text only once its window passed)."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            self._release()
        return self._drain_ready()

    def flush(self) -> list[Event]:
        """Everything, held text included (end of input)."""
        self._release()
        return self._drain_ready()

    @property
    def deadline(self) -> float | None:
        """When held text becomes due, or ``None`` if no text is held."""
        return self._since + self.window if self._kind is not None else None

    @property
    def full(self) -> bool:
        """Whether the producer should wait before pushing more."""
        return (
            len(self._ready) >= self.max_backlog or self._ready_chars + self._pending_chars >= self.max_buffered_chars
        )

    @property
    def has_ready(self) -> bool:
        """Events are ready to be taken now (not only text waiting for its window)."""
        return bool(self._ready)

    @property
    def empty(self) -> bool:
        """Nothing ready and nothing held."""
        return not self._ready and self._kind is None

    def _release(self) -> None:
        if self._kind is None:
            return
        self._ready.append(self._kind("".join(self._parts), cursor=self._cursor))
        self._ready_chars += self._pending_chars
        self._kind, self._parts, self._pending_chars, self._cursor = None, [], 0, None

    def _drain_ready(self) -> list[Event]:
        out = list(self._ready)
        self._ready.clear()
        self._ready_chars = 0
        return out
