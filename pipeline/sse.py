"""Server-Sent Events framing, both ways, without I/O.

:class:`SSEEncoder` turns events into the bytes of SSE frames: every data frame has
an ``event:`` equal to its ``type`` and one ``data:`` line of JSON, and an ``id:``
when the event carries a resume position (:mod:`pipeline.cursor`); the first frame
also carries a ``retry:`` hint; a keepalive is the comment ``: keepalive`` (with an
``id:`` line if it carries a position: no event is dispatched, but the client's
last event id is set).

:class:`SSEParser` is the other direction, following the WHATWG "event stream
interpretation" rules: any of CRLF, LF or CR ends a line, a leading BOM is dropped,
comments are ignored, an event with an empty data buffer is not dispatched (so a
comment after an ``id:`` never yields a phantom event), and an unterminated event
at the end of the stream is discarded.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from typing import Final

import attrs

from . import wire
from .events import Event, Keepalive

KEEPALIVE_FRAME: Final = b": keepalive\n\n"
_LINE_END: Final = re.compile("\r\n|\r|\n")


@attrs.frozen
class ServerSentEvent:
    """One dispatched SSE event, as the spec defines it."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


@attrs.define
class SSEEncoder:
    """Encodes events as SSE frames for one stream.

    ``retry_ms`` is sent once, on the first frame, to tell the browser's EventSource
    how long to wait before it reconnects.  The ``id:`` of a frame is its event's
    ``cursor``; an event without one leaves the client's last event id unchanged.
    """

    retry_ms: int | None = 3000
    _first: bool = attrs.field(default=True, init=False)

    def feed(self, item: Event | bytes) -> tuple[bytes]:
        """As a pure step (:mod:`pipeline.compose`): one frame per event; bytes (a frame already) pass unchanged."""
        return (item if type(item) is bytes else self.encode(item),)  # type: ignore[arg-type]

    def finish(self) -> tuple[()]:
        return ()

    def encode(self, event: Event, id: str | None = None) -> bytes:
        """The bytes of one frame carrying ``event``; its ``id:`` is ``id`` when given, else the event's cursor.

        ``id`` spares a caller that numbers frames a copy of the event per frame.  A content-only
        event (a text delta: the hot path) is framed by :func:`~pipeline.wire.fast_frame`, without cattrs.
        """
        ident = event.cursor if id is None else id
        head = b""
        if self._first:
            self._first = False
            if self.retry_ms is not None:
                head = b"retry: %d\n" % self.retry_ms
        if ident is not None:
            if "\n" in ident or "\r" in ident or "\0" in ident:
                raise ValueError(f"a cursor cannot be an SSE id: {ident!r}")
            head += b"id: %s\n" % ident.encode()
        if type(event) in wire.FAST_TYPES:
            return head + wire.fast_frame(event)  # type: ignore[arg-type]
        if isinstance(event, Keepalive):
            return head + KEEPALIVE_FRAME
        data = wire.dumps(event)
        frame = f"event: {wire.WIRE_TYPES[type(event)]}\ndata: {data}\n\n"
        return head + frame.encode("utf-8")


@attrs.define
class SSEDecoder:
    """Turns SSE lines (without their line terminators) into dispatched events."""

    last_event_id: str = ""
    _data: list[str] = attrs.field(factory=list, init=False)
    _event: str = attrs.field(default="", init=False)
    _retry: int | None = attrs.field(default=None, init=False)

    def feed(self, line: str) -> ServerSentEvent | None:
        """Process one line; returns the event it dispatched, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    @property
    def idle(self) -> bool:
        """No event is being assembled: nothing but the last event id carries over to the next line."""
        return not self._data and not self._event and self._retry is None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], "", None
        if not data:
            return None
        return ServerSentEvent(data="\n".join(data), event=event or "message", id=self.last_event_id, retry=retry)


@attrs.define
class LineSplitter:
    """Splits a byte stream into decoded lines at CRLF, LF or CR, across chunk borders."""

    _decoder: codecs.IncrementalDecoder = attrs.field(
        factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"), init=False
    )
    _buffer: str = attrs.field(default="", init=False)
    _started: bool = attrs.field(default=False, init=False)
    _pending_cr: bool = attrs.field(default=False, init=False)

    def feed(self, chunk: bytes) -> list[str]:
        """The complete lines ``chunk`` finished (a trailing partial line is kept)."""
        return self._split(self._decoder.decode(chunk))

    def close(self) -> list[str]:
        """Flush the decoder.  A final line without a terminator is not a line: it is dropped."""
        lines = self._split(self._decoder.decode(b"", final=True))
        self._buffer = ""
        return lines

    @property
    def idle(self) -> bool:
        """Nothing is held: no partial line, no half of a CRLF, no partial UTF-8 sequence."""
        return not self._buffer and not self._pending_cr and not self._decoder.getstate()[0]

    def started(self) -> None:
        """The stream's first bytes went by without this splitter (:meth:`SSEParser.data_of`): no BOM any more."""
        self._started = True

    def _split(self, text: str) -> list[str]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr and text:
            self._pending_cr = False
            if text.startswith("\n"):
                text = text[1:]
        text = self._buffer + text if self._buffer else text
        if "\r" not in text:  # the common case (LF only): one C-level split
            *lines, self._buffer = text.split("\n")
            return lines
        if text.endswith("\r"):  # a CR at the end may be the first half of a CRLF split across chunks
            self._pending_cr = True
            parts = _LINE_END.split(text[:-1])
            self._buffer = ""
            return parts
        *lines, self._buffer = _LINE_END.split(text)
        return lines


@attrs.define
class SSEParser:
    """Bytes in, dispatched :class:`ServerSentEvent` values out."""

    _lines: LineSplitter = attrs.field(factory=LineSplitter, init=False)
    decoder: SSEDecoder = attrs.field(factory=SSEDecoder)
    _idle: bool = attrs.field(default=True, init=False)
    """Nothing is held (no partial line or UTF-8 sequence, no event being assembled): as of the last call."""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Events completed by ``chunk``."""
        events = self._events(self._lines.feed(chunk))
        self._idle = self._lines.idle and self.decoder.idle
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: what is left unterminated is discarded, as the spec says."""
        events = self._events(self._lines.close())
        self._idle = self._lines.idle and self.decoder.idle
        return events

    def data_of(self, chunk: bytes) -> list[bytes] | None:
        """The undecoded data of the events ``chunk`` completes, when ``chunk`` is nothing but whole events of
        one ``data: `` line each (LF-ended) and the parser holds nothing; else ``None``, nothing consumed.

        Such events are ``message`` events with the last event id unchanged, exactly as :meth:`feed`
        would dispatch them (their data is the bytes' UTF-8 text, with replacement characters).  It is
        how Letta frames every chunk of a stream, so the hot path skips the line-by-line machinery: no
        text decoding, no :class:`ServerSentEvent` per chunk.  The parser's state advances as
        :meth:`feed` would leave it.
        """
        if not self._idle or not chunk.startswith(b"data: ") or not chunk.endswith(b"\n\n") or b"\r" in chunk:
            return None
        if chunk.count(b"\n") == 2:  # one event: the common case
            datas = [chunk[6:-2]]
        else:
            datas = chunk[:-2].split(b"\n\n")
            for data in datas:
                if not data.startswith(b"data: ") or b"\n" in data:
                    return None
            datas = [data[6:] for data in datas]
        self._lines.started()
        return datas

    def _events(self, lines: Iterable[str]) -> list[ServerSentEvent]:
        out = []
        for line in lines:
            sse = self.decoder.feed(line)
            if sse is not None:
                out.append(sse)
        return out


def decode_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Our events from a complete byte stream (unknown types skipped).  For tests and scripts."""
    parser = SSEParser()
    for chunk in chunks:
        yield from _known(parser.feed(chunk))
    yield from _known(parser.close())


def _known(events: Iterable[ServerSentEvent]) -> Iterator[Event]:
    for sse in events:
        event = wire.parse_event(sse.data)
        if event is not None:
            yield event
