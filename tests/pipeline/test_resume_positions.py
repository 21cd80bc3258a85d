"""Resume positions: from any frame's id, the rest of the turn repeats no text and loses none.

Letta's background mode numbers a run's chunks (``seq_id`` from 1) and replays them
from any ``starting_after``; these tests replay the same numbered chunks in memory.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.coalesce import Coalescer
from pipeline.cursor import BadCursor, Cursor, parse_cursor
from pipeline.events import Done, Event, Keepalive, Reasoning, Status, Text, ToolCall
from pipeline.letta_map import LettaMapper

from . import letta_chunks as c


def after(chunks: list[Any], cursor: Cursor) -> list[Any]:
    """What ``runs.messages.stream(run_id, starting_after=cursor.seq)`` replays."""
    if cursor.seq == 0:
        return chunks
    index = next(i for i, ch in enumerate(chunks) if getattr(ch, "seq_id", None) == cursor.seq)
    return chunks[index + 1 :]


def mapped(chunks: list[Any], mapper: LettaMapper) -> list[Event]:
    return [e for ch in chunks for e in mapper.feed(ch)] + mapper.finish()


def text(events: list[Event], kind: type[Text | Reasoning] = Text) -> str:
    return "".join(e.content for e in events if isinstance(e, kind))


def turn_chunks(parts: list[tuple[str, str]]) -> list[Any]:
    chunks: list[Any] = [c.ping()]
    for i, (kind, value) in enumerate(parts):
        if kind == "think":
            chunks.append(c.reasoning(value))
        elif kind == "say":
            chunks.append(c.assistant(value))
        elif kind == "tool":
            chunks += [c.tool_call(f"call-{i}", "memory_insert", "{"), c.tool_call(f"call-{i}", None, value + "}")]
            chunks.append(c.tool_return(f"call-{i}", "ok"))
        else:
            chunks.append(c.ping())
    return c.numbered([*chunks, c.stop(), c.usage()])


words = st.text("abc xyz", min_size=1, max_size=4)
turns = st.lists(st.tuples(st.sampled_from(["think", "say", "say", "tool", "ping"]), words), max_size=25)


def assert_resumes_cleanly(chunks: list[Any], delivered: list[Event], full: list[Event]) -> None:
    """The client got ``delivered`` (the last has a cursor); it resumes from that cursor."""
    cursor = delivered[-1].cursor
    assert cursor is not None
    rest = mapped(after(chunks, parse_cursor(cursor)), LettaMapper(resumable=True, position=cursor))
    for kind in (Text, Reasoning):
        assert text(delivered, kind) + text(rest, kind) == text(full, kind)
    assert isinstance(rest[-1], Done)


@given(turns)
def test_resuming_after_any_event_repeats_and_loses_no_text(parts: list[tuple[str, str]]) -> None:
    chunks = turn_chunks(parts)
    full = mapped(chunks, LettaMapper(resumable=True))
    for k, event in enumerate(full):
        if event.cursor is not None:
            assert_resumes_cleanly(chunks, full[: k + 1], full)


@given(turns, st.lists(st.booleans(), min_size=80, max_size=80))
def test_merged_frames_carry_the_position_of_their_last_part(parts: list[tuple[str, str]], release: list[bool]) -> None:
    chunks = turn_chunks(parts)
    events = mapped(chunks, LettaMapper(resumable=True))
    coalescer, frames = Coalescer(window=1.0), []
    for i, event in enumerate(events):
        coalescer.push(event, now=0.0)
        if release[i % len(release)]:
            frames += coalescer.take(now=2.0)
    frames += coalescer.flush()
    assert text(frames) == text(events)
    for k, frame in enumerate(frames):
        if frame.cursor is not None:
            assert_resumes_cleanly(chunks, frames[: k + 1], events)


def test_the_first_keepalive_marks_the_start_and_a_chunks_last_event_carries_its_position() -> None:
    chunks = c.numbered([c.ping(), c.reasoning("hm"), c.assistant("Hi"), c.assistant("!"), c.stop(), c.usage()])
    events = mapped(chunks, LettaMapper(resumable=True))
    assert [(type(e).__name__, e.cursor) for e in events] == [
        ("Keepalive", "run-1:0"),
        ("Status", "run-1:0"),  # a client holding only the status has not seen chunk 1's reasoning
        ("Reasoning", "run-1:1"),
        ("Text", "run-1:2"),
        ("Text", "run-1:3"),
        ("Done", "run-1:3"),
    ]


def test_a_tool_call_closed_by_the_next_chunk_keeps_the_position_before_it() -> None:
    chunks = c.numbered([c.tool_call("t1", "memory_insert", "{}"), c.assistant("Done."), c.stop()])
    events = mapped(chunks, LettaMapper(resumable=True))
    call = next(e for e in events if isinstance(e, ToolCall))
    said = next(e for e in events if isinstance(e, Text))
    assert (call.cursor, said.cursor) == ("run-1:1", "run-1:2")


def test_a_resumed_turn_sends_no_start_marker_and_keepalives_carry_no_position() -> None:
    mapper = LettaMapper(resumable=True, position="run-1:7")
    assert mapper.feed(c.ping()) == [Keepalive()]
    assert mapper.feed(c.ping())[0].cursor is None


def test_without_resume_no_event_has_a_position() -> None:
    events = mapped(c.numbered(c.answer_turn(["a", "b"])), LettaMapper())
    assert [e.cursor for e in events] == [None] * len(events)
    assert isinstance(events[1], Status)


def test_cursor_text_round_trips_and_rejects_what_is_not_a_position() -> None:
    assert parse_cursor(str(Cursor("run-abc", 17))) == Cursor("run-abc", 17)
    assert parse_cursor(" run-abc:0 ") == Cursor("run-abc", 0)
    for bad in ["", "17", "run-abc", "run-abc:", ":3", "run-abc:-1", "run-abc:x", "run abc:3", "r:१"]:
        try:
            parse_cursor(bad)
        except BadCursor:
            continue
        raise AssertionError(f"{bad!r} was accepted")
