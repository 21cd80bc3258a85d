"""Where a reader is in a turn: the SSE ``id:`` that lets a dropped stream resume.

Letta's background mode numbers every chunk of a run (``seq_id``, from 1) and serves
the run again from any point (``runs.messages.stream(run_id, starting_after=seq)``).
A :class:`Cursor` names the last chunk whose events a frame completes; it travels as
the frame's ``id:`` (``run-…:17``), comes back in ``Last-Event-ID``, and is all a
reconnecting client needs to get the rest of the answer: no text twice, none lost.
"""

from __future__ import annotations

import attrs


class BadCursor(ValueError):
    """A ``Last-Event-ID`` that is not a cursor of ours."""


@attrs.frozen
class Cursor:
    """Chunk ``seq`` of run ``run_id``; ``seq`` 0 means "before the first chunk"."""

    run_id: str
    seq: int

    def __str__(self) -> str:
        return f"{self.run_id}:{self.seq}"


def parse_cursor(text: str) -> Cursor:
    """The cursor in ``text`` (``<run id>:<seq>``), or :class:`BadCursor`."""
    run_id, sep, seq = text.strip().rpartition(":")
    if not sep or not run_id or not seq.isascii() or not seq.isdigit() or any(c.isspace() for c in run_id):
        raise BadCursor(f"not a stream position: {text[:80]!r}")
    if len(run_id) > 200:
        raise BadCursor("the run id in the stream position is too long")
    return Cursor(run_id, int(seq))
