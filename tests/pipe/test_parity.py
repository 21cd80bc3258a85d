"""The pipe's decoder and pipeline/sse.py + pipeline/wire.py must read every stream the same way.

The pipe is pasted into OpenWebUI as one file and cannot import `pipeline`, so its
decoding is a copy in spirit; this test keeps the copy honest.
"""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import EventSource
from hypothesis import given
from hypothesis import strategies as st

from pipe.letta_pipe import ProtocolError as PipeProtocolError
from pipe.letta_pipe import decode_event
from pipeline.sse import SSEEncoder, SSEParser
from pipeline.wire import ProtocolError, parse_event, to_wire

from ..pipeline.test_sse import events as any_events
from .scripted_service import SCENARIOS


def through_pipeline(stream: bytes) -> list[object]:
    parser = SSEParser()
    out: list[object] = []
    for sse in parser.feed(stream) + parser.close():
        try:
            event = parse_event(sse.data)
        except ProtocolError:
            out.append("malformed")
            continue
        if event is not None:
            out.append(to_wire(event))
    return out


def through_pipe(stream: bytes) -> list[object]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream)
    out: list[object] = []
    for sse in EventSource(response).iter_sse():
        if not sse.data:
            continue
        try:
            event = decode_event(sse.data)
        except PipeProtocolError:
            out.append("malformed")
            continue
        if event is not None:
            out.append({k: v for k, v in event.items()})
    return out


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_recorded_streams_decode_alike(name: str) -> None:
    assert through_pipe(SCENARIOS[name]) == through_pipeline(SCENARIOS[name])


@given(st.lists(any_events, max_size=10))
def test_any_encoded_stream_decodes_alike(sent: list[object]) -> None:
    encoder = SSEEncoder()
    stream = b"".join(encoder.encode(e) for e in sent)  # type: ignore[arg-type]
    assert through_pipe(stream) == through_pipeline(stream)


@pytest.mark.parametrize(
    "data",
    [
        '{"type": "message"}',
        '{"type": "message", "content": 5}',
        '{"type": "error"}',
        "[]",
        "nope",
        '{"type": "status", "content": null}',
    ],
)
def test_malformed_payloads_are_refused_by_both(data: str) -> None:
    stream = f"data: {data}\n\n".encode()
    assert through_pipe(stream) == through_pipeline(stream) == ["malformed"]
