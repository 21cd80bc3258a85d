"""Writing a turn's log off the hot path, and reading back what it told the client.

The runner hands every outgoing frame to a :class:`LogWriter` (instant, never waits):
the writer's own task opens the log; a store in this process then takes each batch at
once in the runner's task (``log_append_nowait``: no wake-up per frame), and a store that
must be waited for (Redis) gets whatever has piled up as one batch from the writer's
task, so the live stream never waits on the store and a slow store costs batches, not latency.  The pending
frames are bounded; a store that cannot keep up (or fails) marks the log *broken* —
the live stream goes on, and a resume of that turn is refused (410) instead of
replaying a log with holes.

:func:`logged_text` reads a log's frames back as the answer text they carried (for a
takeover, which must send only what the log has not).
"""

from __future__ import annotations

import logging

import attrs

from pipeline.events import Text
from pipeline.flag import Flag
from pipeline.sse import SSEParser
from pipeline.wire import parse_event

from .store import LogFrame, LogMeta, TurnStore

log = logging.getLogger(__name__)


@attrs.define
class LogWriter:
    """Appends one turn's frames to ``store``, at once or in batches.  :meth:`run` is its task; :meth:`close` ends it.

    Order is kept: frames go at once only when the log is open and nothing is queued.
    With a store that takes frames at once, :meth:`run` returns as soon as the log is open
    and what was queued before is written (calling it again after :meth:`close` writes
    anything left); otherwise it runs until closed.

    ``opening`` (the log's meta and ttl): :meth:`run` opens the log first; a store that
    fails to open it breaks the log (the turn goes on, unresumable).
    """

    store: TurnStore
    turn_id: str
    opening: tuple[LogMeta, float] | None = None
    max_pending: int = 4096
    broken: BaseException | None = None
    appended: int = 0
    batches: int = 0
    _pending: list[LogFrame] = attrs.field(factory=list, init=False)
    _wake: Flag = attrs.field(factory=Flag, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def append(self, frame: LogFrame) -> None:
        """Queue ``frame``; never waits.  Past ``max_pending`` frames the log is given up as broken."""
        self.extend([frame])

    def extend(self, frames: list[LogFrame]) -> None:
        """Write ``frames`` (one batch of the throttle) or queue them; never waits.

        A store in this process takes them at once, in the caller's task (no wake-up of
        the writer's) — once the log is open and nothing is queued before them.
        """
        if self.broken is not None or not frames:
            return
        if self.opening is None and not self._pending:
            try:
                written = self.store.log_append_nowait(self.turn_id, frames)
            except Exception as exc:  # the live stream goes on; only resume is lost
                self._break(exc)
                return
            if written:
                self.appended += len(frames)
                self.batches += 1
                return
        if len(self._pending) + len(frames) > self.max_pending:
            self.broken = OverflowError(f"{len(self._pending)} frames waiting for the store")
            log.warning("turn log %s broken: the store does not keep up", self.turn_id)
            self._pending.clear()
            return
        self._pending.extend(frames)
        self._wake.set()

    def _takes_at_once(self) -> bool:
        """Whether the store takes frames without waiting (probed with an empty batch)."""
        try:
            return self.store.log_append_nowait(self.turn_id, [])
        except Exception as exc:  # the log is gone: nothing more can be written
            self._break(exc)
            return True

    def _break(self, exc: BaseException) -> None:
        self.broken = exc
        self._pending.clear()
        log.warning("turn log %s broken: %r", self.turn_id, exc)

    def close(self) -> None:
        """No more frames: :meth:`run` returns once the pending ones are written."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        """Open the log (if not yet), then write batches until closed and drained (or broken)."""
        if self.opening is not None and self.broken is None:
            try:
                await self.store.log_open(*self.opening)
            except Exception as exc:
                self.broken = exc
                log.warning("turn log %s broken: it could not be opened: %r", self.turn_id, exc)
                return
            self.opening = None
        while True:
            if not self._pending:
                if self._closed or self.broken is not None:
                    return
                if self._takes_at_once():
                    return  # every later frame goes in at once, in the caller's task: this task has nothing to do
                await self._wake.wait()
                self._wake = Flag()
                continue
            batch = self._pending[:]  # kept pending until written: a cancelled write is tried again
            try:
                await self.store.log_append(self.turn_id, batch)
            except Exception as exc:  # the live stream goes on; only resume is lost
                self._break(exc)
                return
            del self._pending[: len(batch)]
            self.appended += len(batch)
            self.batches += 1


def logged_text(frames: list[LogFrame]) -> str:
    """The answer text the frames carried, in order."""
    parser = SSEParser()
    parts: list[str] = []
    for frame in frames:
        for sse in parser.feed(frame.data):
            event = parse_event(sse.data)
            if isinstance(event, Text):
                parts.append(event.content)
    return "".join(parts)
