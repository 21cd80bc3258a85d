"""The SSE parser against the examples of the WHATWG spec (§9.2.6), and the encoder round-trip."""

from __future__ import annotations

import string

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.events import (
    Done,
    Error,
    Event,
    Keepalive,
    Reasoning,
    Status,
    Text,
    ToolCall,
    ToolResult,
    Usage,
)
from pipeline.sse import KEEPALIVE_FRAME, ServerSentEvent, SSEEncoder, SSEParser, decode_events


def parse(stream: bytes) -> list[ServerSentEvent]:
    parser = SSEParser()
    return parser.feed(stream) + parser.close()


def parse_bytewise(stream: bytes) -> list[ServerSentEvent]:
    parser = SSEParser()
    out: list[ServerSentEvent] = []
    for i in range(len(stream)):
        out += parser.feed(stream[i : i + 1])
    return out + parser.close()


class TestSpecExamples:
    def test_multiline_data_is_joined_with_newlines(self) -> None:
        stream = b"data: YHOO\ndata: +2\ndata: 10\n\n"
        assert parse(stream) == [ServerSentEvent(data="YHOO\n+2\n10")]

    def test_comments_ids_and_unterminated_last_event(self) -> None:
        stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n"
        assert parse(stream) == [
            ServerSentEvent(data="first event", id="1"),
            ServerSentEvent(data="second event", id=""),
        ]

    def test_empty_data_fields(self) -> None:
        stream = b"data\n\ndata\ndata\n\ndata:"
        assert parse(stream) == [ServerSentEvent(data=""), ServerSentEvent(data="\n")]

    def test_one_leading_space_is_optional(self) -> None:
        assert parse(b"data:test\n\ndata: test\n\n") == [ServerSentEvent(data="test")] * 2

    def test_second_space_is_kept(self) -> None:
        assert parse(b"data:  x\n\n") == [ServerSentEvent(data=" x")]


class TestLineEndings:
    def test_cr_crlf_and_lf_all_end_lines(self) -> None:
        stream = b"data: a\r\rdata: b\r\n\r\ndata: c\n\n"
        assert [e.data for e in parse(stream)] == ["a", "b", "c"]

    def test_crlf_split_across_chunks_is_one_line_end(self) -> None:
        parser = SSEParser()
        events = parser.feed(b"data: a\r") + parser.feed(b"\ndata: b\r") + parser.feed(b"\n\r\n")
        assert [e.data for e in events] == ["a\nb"]

    def test_leading_bom_is_dropped(self) -> None:
        assert parse("\ufeffdata: x\n\n".encode()) == [ServerSentEvent(data="x")]

    def test_multibyte_utf8_split_across_chunks(self) -> None:
        assert parse_bytewise("data: héllo ✓ 🙂\n\n".encode()) == [ServerSentEvent(data="héllo ✓ 🙂")]

    def test_invalid_utf8_becomes_replacement_character(self) -> None:
        assert parse(b"data: a\xffb\n\n") == [ServerSentEvent(data="a\ufffdb")]


class TestFields:
    def test_event_name_and_retry(self) -> None:
        assert parse(b"retry: 1500\nevent: status\ndata: x\n\n") == [
            ServerSentEvent(data="x", event="status", retry=1500)
        ]

    def test_bad_retry_is_ignored(self) -> None:
        assert parse(b"retry: 15x\ndata: x\n\n")[0].retry is None

    def test_id_with_nul_is_ignored(self) -> None:
        assert parse(b"id: 7\ndata: a\n\nid: 8\x00\ndata: b\n\n")[1].id == "7"

    def test_unknown_fields_are_ignored(self) -> None:
        assert parse(b"foo: bar\ndata: x\n\n") == [ServerSentEvent(data="x")]

    def test_comment_after_an_id_yields_no_phantom_event(self) -> None:
        """httpx-sse #35: a keepalive comment after an event with an id must not become an event."""
        assert parse(b"id: 1\ndata: x\n\n: keepalive\n\n") == [ServerSentEvent(data="x", id="1")]


class TestEncoder:
    def test_first_frame_has_retry_and_the_id_is_the_events_cursor(self) -> None:
        encoder = SSEEncoder()
        first = encoder.encode(Status("Thinking...", cursor="run-1:3"))
        second = encoder.encode(Text("Hi", cursor="run-1:4"))
        assert first == (
            b'retry: 3000\nid: run-1:3\nevent: status\ndata: {"type":"status","content":"Thinking..."}\n\n'
        )
        assert second == b'id: run-1:4\nevent: message\ndata: {"type":"message","content":"Hi"}\n\n'

    def test_an_event_without_cursor_has_no_id_so_the_clients_last_id_stays(self) -> None:
        stream = SSEEncoder().encode(Text("a", cursor="run-1:1")) + SSEEncoder(retry_ms=None).encode(Text("b"))
        assert [e.id for e in parse(stream)] == ["run-1:1", "run-1:1"]

    def test_keepalive_is_a_comment_and_may_set_the_last_id_without_an_event(self) -> None:
        encoder = SSEEncoder(retry_ms=None)
        assert encoder.encode(Keepalive()) == KEEPALIVE_FRAME
        start = encoder.encode(Keepalive(cursor="run-1:0"))
        assert start == b"id: run-1:0\n" + KEEPALIVE_FRAME
        parser = SSEParser()
        assert parser.feed(start) == []
        assert parser.decoder.last_event_id == "run-1:0"
        assert parser.feed(encoder.encode(Text("x")))[0].id == "run-1:0"

    def test_a_cursor_that_would_break_the_frame_is_refused(self) -> None:
        with pytest.raises(ValueError, match="SSE id"):
            SSEEncoder().encode(Text("x", cursor="run\nevent: evil"))

    def test_an_explicit_id_replaces_the_cursor_and_is_checked_like_it(self) -> None:
        encoder = SSEEncoder(retry_ms=None)
        for event in (Text("Hi", cursor="old:1"), Done()):
            assert encoder.encode(event, id="run-1:5") == SSEEncoder(retry_ms=None).encode(
                attrs.evolve(event, cursor="run-1:5")
            )
        assert encoder.encode(Text("Hi"), id="run-1:6").startswith(b"id: run-1:6\nevent: message\n")
        with pytest.raises(ValueError, match="SSE id"):
            encoder.encode(Text("x"), id="run\revent: evil")

    def test_original_plan_shapes(self) -> None:
        frames = [SSEEncoder(retry_ms=None).encode(e) for e in (Done(), Error("boom"))]
        assert frames[0].endswith(b'data: {"type":"done"}\n\n')
        assert frames[1].endswith(b'data: {"type":"error","message":"boom"}\n\n')


texts = st.lists(st.text() | st.sampled_from(["\n", "\r", "\r\n", "\n\n", "data: ", ": ", "\ufeff", "\ud800"])).map(
    "".join
)
"""Any text, rich in what could break a frame: blank lines, field prefixes, a BOM, a lone surrogate."""
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(Text, texts),
    st.builds(Reasoning, texts),
    st.builds(Status, texts),
    st.builds(ToolCall, texts, texts, st.none() | texts),
    st.builds(ToolResult, st.none() | texts, st.booleans(), texts),
    st.builds(Error, texts, st.text(string.ascii_lowercase, min_size=1)),
    st.builds(Done, st.none() | texts, st.none() | st.builds(Usage, st.none() | st.integers(0, 10**9))),
    st.just(Keepalive()),
)


@given(st.lists(events, max_size=12), st.data())
def test_encode_then_decode_round_trips(sent: list[Event], data: st.DataObject) -> None:
    encoder = SSEEncoder()
    stream = b"".join(encoder.encode(e) for e in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert list(decode_events(chunks)) == [e for e in sent if not isinstance(e, Keepalive)]


@given(texts)
def test_text_with_blank_lines_and_data_prefix_stays_one_event(text: str) -> None:
    frame = SSEEncoder().encode(Text(text))
    assert len(parse(frame)) == 1


cursors = st.none() | st.builds(
    lambda run, seq: f"run-{run}:{seq}", st.text(string.hexdigits, max_size=8), st.integers(0)
)


@given(st.lists(st.tuples(events, cursors), max_size=12))
def test_every_dispatched_event_carries_the_latest_cursor_sent(sent: list[tuple[Event, str | None]]) -> None:
    encoder = SSEEncoder()
    parser = SSEParser()
    last = ""
    for event, cursor in sent:
        dispatched = parser.feed(encoder.encode(attrs.evolve(event, cursor=cursor)))
        last = cursor if cursor is not None else last
        assert [e.id for e in dispatched] == ([] if isinstance(event, Keepalive) else [last])


# The fast path (`SSEParser.data_of`) against the general one: chunks built from what can make it go wrong —
# Letta's whole `data:` events, and fragments of lines, CRs, a BOM, ids, comments, split UTF-8.
fragments = st.lists(
    st.one_of(
        st.builds(
            lambda t: b"data: " + t.encode() + b"\n\n",
            st.text(max_size=12).filter(lambda t: "\n" not in t and "\r" not in t),
        ),
        st.sampled_from(
            [
                b"data: a",
                b"\n",
                b"\n\n",
                b"\r",
                b"\r\n",
                b"data:x\n\n",
                b"id: 7\n",
                b": c\n",
                b"event: error\n",
                b"retry: 5\n",
                b"\xef\xbb\xbf",
                b"\xc3",
                b"\xa9",
                b"\xff",
                b"data: \xc3\xa9\n\n",
                b"data: [DONE]\n\n",
            ]
        ),
    ),
    max_size=6,
).map(b"".join)


@given(st.lists(fragments, max_size=10))
@example([b"data: x\n\n", b"\xef\xbb\xbfdata: y\n\n"])  # a BOM after the stream's start is no BOM
def test_data_of_dispatches_exactly_what_feed_would(chunks: list[bytes]) -> None:
    fast, plain = SSEParser(), SSEParser()
    took = 0
    for chunk in chunks:
        expected = plain.feed(chunk)
        datas = fast.data_of(chunk)
        if datas is None:
            got = fast.feed(chunk)
        else:
            took += 1
            got = [ServerSentEvent(d.decode("utf-8", "replace"), id=fast.decoder.last_event_id) for d in datas]
        assert got == expected
    assert fast.close() == plain.close()


def test_data_of_takes_lettas_framing_and_declines_anything_else() -> None:
    parser = SSEParser()
    assert parser.data_of(b'data: {"a":1}\n\ndata: [DONE]\n\n') == [b'{"a":1}', b"[DONE]"]
    assert parser.data_of(b"event: error\ndata: x\n\n") is None  # another field
    assert parser.data_of(b"data: x\r\n\r\n") is None  # CRs
    assert parser.data_of(b"data: a\ndata: b\n\n") is None  # two data lines
    assert parser.data_of(b"data: x\n") is None  # unfinished
    parser.feed(b"data: held")  # a partial line is held: the next whole event is not the chunk alone
    assert parser.data_of(b"data: x\n\n") is None
    assert parser.feed(b"\n\n") == [ServerSentEvent("held")]
    parser.feed(b"\xc3")  # half a UTF-8 sequence is held
    assert parser.data_of(b"data: x\n\n") is None
