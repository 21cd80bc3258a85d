"""The runner's framer: every event's frame is the wire's frame of it with its id set.

A content-only event's frame (a text delta, the hot path) is built without cattrs; these
tests hold it to the wire's general path for any content (non-ASCII, newlines, a lone surrogate)
and check the numbering, the ``last`` mark and the refusal of an id that cannot be an SSE id.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.turn_runner import TurnFramer
from pipeline import wire
from pipeline.events import Done, Error, Event, Keepalive, Reasoning, Status, Text, ToolCall, ToolResult
from pipeline.sse import SSEParser

CONTENT = st.text(alphabet=st.characters(codec=None), max_size=40) | st.sampled_from(["", "a\nb", "\ud800", "é 😀"])


def encoder_frame(event: Event, cursor: str) -> bytes:
    """The frame the wire's general path (cattrs, :func:`pipeline.wire.dumps`) makes of ``event`` with that id."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        cursor.encode(),
        wire.WIRE_TYPES[type(event)].encode(),
        wire.dumps(event).encode(),
    )


@given(st.lists(st.tuples(st.sampled_from([Text, Reasoning, Status]), CONTENT), min_size=1, max_size=8))
def test_content_frames_are_the_encoders(items: list[tuple[type, str]]) -> None:
    framer = TurnFramer("turn-1", seq=4)
    for n, (kind, content) in enumerate(items, start=5):
        event = kind(content)
        (frame,) = framer.feed(event)
        assert (frame.seq, frame.last) == (n, False)
        assert frame.data == encoder_frame(event, f"turn-1:{n}")


@pytest.mark.parametrize(
    "event",
    [
        ToolCall("search", '{"q": 1}', "c1"),
        ToolResult("search", True, "found", "c1"),
        Done(),
        Error("boom", "upstream_failed"),
        Text("already placed", cursor="other:3"),
    ],
)
def test_other_events_go_through_the_encoder(event: Event) -> None:
    framer = TurnFramer("t_2")
    (frame,) = framer.feed(event)
    assert frame.data == encoder_frame(event, "t_2:1")
    assert frame.last == isinstance(event, (Done, Error))


def test_frames_parse_back_with_their_ids() -> None:
    framer = TurnFramer("abc")
    data = b"".join(f.data for e in (Text("hé"), Keepalive(), Text("x"), Done()) for f in framer.feed(e))
    assert [(sse.id, sse.event) for sse in SSEParser().feed(data)] == [
        ("abc:1", "message"),
        ("abc:2", "message"),
        ("abc:3", "done"),
    ]


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_a_turn_id_that_cannot_be_an_sse_id_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="SSE id"):
        TurnFramer(bad)
