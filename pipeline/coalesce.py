"""Merging text deltas into fewer, larger frames, as a pure state machine.

OpenWebUI re-serialises the whole message for every streamed chunk, so a frame per
token is expensive for it.  :class:`Coalescer` sends at most one text frame per
``window``: the first delta after a pause (no text frame in the last window) goes out
at once — the *leading edge*, so the first words of an answer never wait for the
window — and the deltas that arrive after it are held and merged until the window
since that frame has passed (the *trailing* merge), so a steady stream of tokens
becomes frames exactly ``window`` apart.  With ``leading=False`` every frame waits its
window from its first delta (the trailing-only throttle, one window more on the first
text).  Consecutive deltas of one kind (answer text or reasoning) are merged; held text
is released at once when it reaches ``max_chars`` or when any other event arrives — so
order is kept, and a status, tool or terminal event never waits behind text (the end of
a turn is never delayed).  Merged text carries the resume position (``cursor``) of its
last part.

It is told the time (``now``) rather than reading a clock, so it is tested without
an event loop; the :func:`pipeline.throttle.throttle` stage drives it.
"""

from __future__ import annotations

import math

import attrs

from .events import Event, Reasoning, Text

Delta = Text | Reasoning


@attrs.define
class Coalescer:
    """Buffers events; text deltas of one kind are merged.

    ``window``, ``leading`` and ``max_chars`` decide when merged text is released.
    ``max_backlog`` (events ready to send) and ``max_buffered_chars`` (text held in total)
    bound the memory: :attr:`full` tells the producer to stop pushing until :meth:`take` drains.
    """

    window: float = 0.05
    max_chars: int = 4096
    max_backlog: int = 32
    max_buffered_chars: int = 65536
    leading: bool = True
    """Send the first delta after a pause at once (False: every text frame waits its window)."""
    _ready: list[Event] = attrs.field(factory=list, init=False)
    _ready_chars: int = attrs.field(default=0, init=False)
    _kind: type[Delta] | None = attrs.field(default=None, init=False)
    _parts: list[str] = attrs.field(factory=list, init=False)
    _pending_chars: int = attrs.field(default=0, init=False)
    _cursor: str | None = attrs.field(default=None, init=False)
    _since: float = attrs.field(default=0.0, init=False)
    _next: float = attrs.field(default=-math.inf, init=False)
    """When the next text frame may go out: one window after the last one."""

    def push(self, event: Event, now: float) -> None:
        """Accept ``event``, which arrived at ``now``."""
        if isinstance(event, (Text, Reasoning)):
            if self._kind is not type(event):
                self._release(now)
                self._kind = type(event)
                self._since = now
            self._parts.append(event.content)
            self._cursor = event.cursor if event.cursor is not None else self._cursor
            self._pending_chars += len(event.content)
            # a zero window holds what piles up until the writer takes it (merged for a slow consumer)
            leading_edge = len(self._parts) == 1 and self.window > 0 and self._opens_a_frame(now)
            if leading_edge or self._pending_chars >= self.max_chars:
                self._release(now)
        else:
            self._release(now)
            self._ready.append(event)

    def take(self, now: float) -> list[Event]:
        """Everything that may be sent at ``now``, in order (held text only once its window passed)."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            # on time (or nearly): the next window counts from this one's end, so frames are `window` apart;
            # a writer that was held up longer than a window starts a fresh window instead of catching up
            self._release(deadline if now < deadline + self.window else now)
        return self._drain_ready()

    def flush(self) -> list[Event]:
        """Everything, held text included (end of input)."""
        self._release(None)
        return self._drain_ready()

    def passes(self, event: Event, now: float) -> bool:
        """Whether ``event`` would be sent at once with nothing before it, so a caller may send it itself.

        True when nothing is held or ready and ``event`` is not a delta, or is a delta
        that opens a frame now (a leading edge, or a zero window).  A caller that sends
        it must tell :meth:`passed`.
        """
        if not self.empty:
            return False
        return not isinstance(event, (Text, Reasoning)) or self._opens_a_frame(now)

    def passed(self, event: Event, now: float) -> None:
        """``event``, which :meth:`passes` allowed, was sent at ``now`` by the caller."""
        if isinstance(event, (Text, Reasoning)):
            self._next = now + self.window

    @property
    def deadline(self) -> float | None:
        """When held text becomes due, or ``None`` if no text is held."""
        if self._kind is None:
            return None
        if self.leading:
            return max(self._since, self._next)
        return self._since + self.window

    def _opens_a_frame(self, now: float) -> bool:
        """A delta arriving at ``now`` with no text held may go out at once."""
        return self.window <= 0 or (self.leading and now >= self._next)

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

    def _release(self, at: float | None) -> None:
        """Make the held text one ready event; the next text frame may go a window after ``at``."""
        if self._kind is None:
            return
        if at is not None:
            self._next = at + self.window
        self._ready.append(self._kind("".join(self._parts), cursor=self._cursor))
        self._ready_chars += self._pending_chars
        self._kind, self._parts, self._pending_chars, self._cursor = None, [], 0, None

    def _drain_ready(self) -> list[Event]:
        out, self._ready = self._ready, []  # a list, not a deque: an empty deque holds a block of ~0.7 KiB
        self._ready_chars = 0
        return out
