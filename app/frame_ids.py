"""A frame's place in a turn: the SSE ``id:`` (``<turn id>:<seq>``) that lets a dropped stream resume.

The runner numbers a turn's outgoing frames 1, 2, 3, … and sends each with the id
``<turn id>:<seq>``; a stream's opening frame carries ``<turn id>:0`` ("before the
first frame").  A client that loses the connection sends the last id it got as
``Last-Event-ID`` and gets every frame after it from the turn's log.
"""

from __future__ import annotations

import re

import attrs

_TURN_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


class BadFrameId(ValueError):
    """A ``Last-Event-ID`` that is not a frame id of ours."""


@attrs.frozen
class FrameId:
    turn_id: str
    seq: int

    def __str__(self) -> str:
        return f"{self.turn_id}:{self.seq}"


def parse_frame_id(text: str) -> FrameId:
    """The frame id in ``text``, or :class:`BadFrameId`."""
    turn_id, sep, seq = text.strip().rpartition(":")
    if not sep or not _TURN_ID.fullmatch(turn_id) or not seq.isascii() or not seq.isdigit() or len(seq) > 12:
        raise BadFrameId(f"not a stream position: {text[:80]!r}")
    return FrameId(turn_id, int(seq))
