"""The raw Letta stream: Letta's SSE bytes → our parser → orjson → dicts → the mapper gives exactly the events
the SDK-model path gives for the same stream (parity), whatever the chunk borders and line endings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from letta_client import AsyncLetta
from letta_client._models import construct_type
from letta_client.types.agents.letta_streaming_response import LettaStreamingResponse
from letta_client.types.agents.tool_call_delta import ToolCallDelta
from letta_client.types.agents.tool_call_message import ToolCallMessage
from letta_client.types.agents.tool_return import ToolReturn
from letta_client.types.tool_return_message import ToolReturnMessage

from pipeline.events import Error, Event
from pipeline.letta_map import LettaMapper
from pipeline.letta_raw import RawLettaStream
from pipeline.letta_turn import LettaTurn, letta_source, start_turn
from pipeline.sse import SSEParser

from . import letta_chunks as c

CLIENT = AsyncLetta(base_url="http://letta.test", max_retries=0)


def multi_call() -> ToolCallMessage:
    calls: Any = [
        {"tool_call_id": "m1", "name": "alpha", "arguments": '{"a": 1}'},
        {"tool_call_id": "m2", "name": "beta", "arguments": "{}"},
    ]
    first = ToolCallDelta(tool_call_id="m1", name="alpha", arguments='{"a": 1}')
    return ToolCallMessage(
        id="t", date=c.NOW, tool_call=first, tool_calls=calls, run_id=c.RUN, message_type="tool_call_message"
    )


def multi_return() -> ToolReturnMessage:
    returns = [
        ToolReturn(tool_call_id="m1", status="success", tool_return="ok one"),
        ToolReturn(tool_call_id="m2", status="error", tool_return="bad"),
    ]
    return ToolReturnMessage(
        id="tr",
        date=c.NOW,
        status="success",
        tool_call_id="m1",
        tool_return="",
        tool_returns=returns,
        run_id=c.RUN,
        message_type="tool_return_message",
    )


TURNS: dict[str, list[Any]] = {
    "answer": c.answer_turn(["Hel", "lo", " wörld ✓", 'quote " and \\ and\nnewline']),
    "tools": [
        c.ping(),
        c.reasoning("I should search."),
        c.hidden(),
        c.tool_call("call-1", "conversation_search", '{"query":'),
        c.tool_call("call-1", None, ' "essay"}'),
        c.tool_return("call-1", "found 3 results " * 30),
        c.reasoning("Now answer."),
        c.assistant("Here"),
        c.assistant([{"type": "text", "text": " it"}, {"type": "text", "text": " is"}]),
        c.stop(),
        c.usage(),
    ],
    "two calls and a failed tool": [
        c.tool_call("a", "first", "{}"),
        c.tool_call("b", "second", "{}"),
        c.tool_return("b", "nope", "error"),
        c.tool_return("unknown-call", "?"),
        c.stop("max_steps"),
    ],
    "multi-tool": [multi_call(), multi_return(), c.assistant("done"), c.stop(), c.usage()],
    "letta error": [c.ping(), c.assistant("par"), c.error("model exploded", "llm_error"), c.stop("error"), c.usage()],
    "error stop": [c.reasoning("hm"), c.stop("llm_api_error"), c.usage()],
    "irrelevant": [c.user("hi"), c.assistant(""), c.reasoning(""), c.ping(), c.stop()],
    "incomplete": [c.ping(), c.assistant("half")],
}


def letta_bytes(chunks: list[Any], *, exclude_none: bool = False, crlf: bool = False) -> bytes:
    """The turn as Letta frames it on the wire: ``data: {json}`` per chunk, then ``data: [DONE]``."""
    frames = [b"data: " + ch.model_dump_json(exclude_none=exclude_none).encode() + b"\n\n" for ch in chunks]
    wire = b"".join(frames) + b"data: [DONE]\n\n"
    return wire.replace(b"\n", b"\r\n") if crlf else wire


def cut(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted({min(max(p, 0), len(data)) for p in at})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return [p for p in pieces if p]


class Pieces(httpx.AsyncByteStream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


class FakeBody:
    """letta-client's streamed ``AsyncAPIResponse``: a real httpx response whose body arrives in ``pieces``."""

    def __init__(self, pieces: list[bytes]) -> None:
        request = httpx.Request("POST", "http://letta.test/v1/agents/agent-1/messages")
        self.http_response = httpx.Response(200, request=request, stream=Pieces(pieces))
        self.closed = False

    async def close(self) -> None:
        await self.http_response.aclose()
        self.closed = True


def sdk_events(wire: bytes, show_reasoning: bool = True) -> list[Event]:
    """What the SDK path makes of the bytes: letta-client's ``AsyncStream`` builds each model with
    ``construct_type(LettaStreamingResponse, json)``; the mapper maps the models."""
    mapper = LettaMapper(show_reasoning=show_reasoning)
    events: list[Event] = []
    parser = SSEParser()
    for sse in parser.feed(wire) + parser.close():
        if sse.data.startswith("[DONE]"):
            break
        events += mapper.feed(construct_type(type_=LettaStreamingResponse, value=json.loads(sse.data)))
    return events + mapper.finish()


async def raw_events(pieces: list[bytes], show_reasoning: bool = True) -> list[Event]:
    mapper = LettaMapper(show_reasoning=show_reasoning)
    events: list[Event] = []
    async for message in RawLettaStream(CLIENT, FakeBody(pieces)):
        assert type(message) is dict
        events += mapper.feed(message)
    return events + mapper.finish()


@pytest.mark.parametrize("name", sorted(TURNS))
@pytest.mark.parametrize("exclude_none", [False, True])
@pytest.mark.parametrize("show_reasoning", [True, False])
def test_raw_messages_map_to_the_same_events_as_the_sdk_models(
    name: str, exclude_none: bool, show_reasoning: bool
) -> None:
    wire = letta_bytes(TURNS[name], exclude_none=exclude_none)
    expected = sdk_events(wire, show_reasoning)
    assert expected  # every turn means something
    got = anyio.run(raw_events, [wire], show_reasoning)
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(TURNS)),
    at=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
    crlf=st.booleans(),
)
def test_chunk_borders_and_line_endings_change_nothing(name: str, at: list[int], crlf: bool) -> None:
    wire = letta_bytes(TURNS[name], crlf=crlf)
    assert anyio.run(raw_events, cut(wire, at)) == sdk_events(letta_bytes(TURNS[name]))


def test_the_stream_ends_at_done_and_skips_named_events_as_the_sdk_does() -> None:
    wire = (
        b': comment\n\nevent: something_else\ndata: {"message_type": "assistant_message"}\n\n'
        + letta_bytes([c.assistant("x")])
        + b'data: {"message_type": "assistant_message", "content": "after done"}\n\n'
    )

    async def read() -> list[dict[str, Any]]:
        return [m async for m in RawLettaStream(CLIENT, FakeBody([wire]))]

    messages = anyio.run(read)
    assert [m["content"] for m in messages] == ["x"]


def test_an_error_event_mid_stream_becomes_lettas_error_event() -> None:
    error = json.dumps({"message_type": "error_message", "error_type": "llm_error", "message": "model exploded"})
    wire = (
        letta_bytes([c.ping(), c.assistant("par")])[: -len(b"data: [DONE]\n\n")]
        + f"event: error\ndata: {error}\n\n".encode()
    )
    body = FakeBody(cut(wire, [7, 50, 51]))
    turn = LettaTurn(CLIENT, "agent-1", RawLettaStream(CLIENT, body))
    cancelled: list[LettaTurn] = []

    async def unfinished(t: LettaTurn) -> None:
        cancelled.append(t)

    async def run() -> list[Any]:
        send, recv = anyio.create_memory_object_stream[Any](100)
        await letta_source(turn, send, unfinished=unfinished)
        mapper = LettaMapper()
        events: list[Any] = []
        with recv:
            async for item in recv:
                events += mapper.feed(item)
        return events + mapper.finish()

    events = anyio.run(run)
    assert events[-1] == Error("model exploded", "llm_error")
    assert body.http_response.stream.closed  # the transport's stream: its connection goes back to the pool
    assert cancelled == [turn]  # not read to its end: the run is given up


def test_start_turn_reads_through_the_sdks_streaming_response_with_the_sdks_headers() -> None:
    """Letta answers 422 to a streaming create from a client it does not take for letta-client: the raw
    path must send what ``messages.create(streaming=True)`` sends (but for the SDK's raw-response marker)."""
    seen: list[httpx.Request] = []
    wire = letta_bytes(c.answer_turn(["a", "b"]))

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=wire)

    async def run(raw: bool) -> list[Any]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        client = AsyncLetta(base_url="http://letta.test", http_client=http, max_retries=0)
        turn = await start_turn(client, "agent-1", "hello", raw=raw)
        try:
            return [chunk async for chunk in turn.chunks()]
        finally:
            await turn.aclose()
            await client.close()

    raw_chunks = anyio.run(run, True)
    sdk_chunks = anyio.run(run, False)
    assert all(type(ch) is dict for ch in raw_chunks)
    assert [ch["message_type"] for ch in raw_chunks] == [ch.message_type for ch in sdk_chunks]
    raw_request, sdk_request = seen
    assert raw_request.url == sdk_request.url
    assert raw_request.method == "POST"
    assert json.loads(raw_request.content) == json.loads(sdk_request.content)
    ignore = {"x-stainless-raw-response", "x-stainless-retry-count", "x-stainless-read-timeout", "content-length"}
    assert {k: v for k, v in raw_request.headers.items() if k not in ignore} == {
        k: v for k, v in sdk_request.headers.items() if k not in ignore
    }
    assert raw_request.headers["user-agent"].startswith("AsyncLetta/Python")


def test_start_turn_raises_the_sdks_error_before_streaming() -> None:
    from letta_client import NotFoundError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Agent agent-x not found"})

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        client = AsyncLetta(base_url="http://letta.test", http_client=http, max_retries=0)
        try:
            await start_turn(client, "agent-x", "hello")
        finally:
            await client.close()

    with pytest.raises(NotFoundError):
        anyio.run(run)


@pytest.mark.parametrize("coding", ["identity", "gzip"])
def test_a_coded_body_is_decoded_and_a_plain_one_is_read_as_it_comes(coding: str) -> None:
    """Without a content coding the raw stream reads the transport's bytes as they are (no httpx
    re-chunking); with one (a proxy that compresses) it still gets the decoded text."""
    import gzip

    wire = letta_bytes(c.answer_turn(["a", "b"]))
    body = gzip.compress(wire) if coding == "gzip" else wire

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-type": "text/event-stream", "content-encoding": coding}, content=body
        )

    async def run() -> list[Any]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        client = AsyncLetta(base_url="http://letta.test", http_client=http, max_retries=0)
        turn = await start_turn(client, "agent-1", "hello")
        try:
            return [chunk async for chunk in turn.chunks()]
        finally:
            await turn.aclose()
            await client.close()

    chunks = anyio.run(run)
    assert [ch["message_type"] for ch in chunks] == [
        json.loads(sse.data)["message_type"] for sse in SSEParser().feed(wire) if not sse.data.startswith("[DONE]")
    ]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "sdk"])
def test_the_turn_learns_its_run_id_once_before_the_chunk_that_names_it(raw: bool) -> None:
    """``on_run`` fires once, from the reading, before the first chunk naming the run is handed on — for
    the raw stream (which notes it itself, no generator around it) as for the SDK's."""
    chunks = [c.user("hi").model_copy(update={"run_id": None}), *c.answer_turn(["a", "b"])]
    wire = letta_bytes(chunks, exclude_none=True)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=wire)

    async def run() -> tuple[list[str | None], list[tuple[str, int]], str | None]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        client = AsyncLetta(base_url="http://letta.test", http_client=http, max_retries=0)
        turn = await start_turn(client, "agent-1", "hello", raw=raw)
        seen: list[str | None] = []
        runs: list[tuple[str, int]] = []
        turn.on_run = lambda run_id: runs.append((run_id, len(seen)))
        try:
            async for chunk in turn.chunks():
                seen.append(chunk.get("message_type") if raw else getattr(chunk, "message_type", None))
        finally:
            await turn.aclose()
            await client.close()
        return seen, runs, turn.run_id

    seen, runs, run_id = anyio.run(run)
    assert seen[:2] == ["user_message", "ping"]
    assert runs == [(c.RUN, 1)]  # once, after the user message (no run id) and before the ping that names it
    assert run_id == c.RUN


def test_lettas_own_chunks_take_the_fast_path_and_read_as_the_parser_reads_them() -> None:
    """One whole ``data:`` event per chunk (as Letta writes them), bad UTF-8 included: the same messages as
    the line-by-line parser, which reads bad bytes as replacement characters."""
    frames = [
        b'data: {"message_type": "assistant_message", "content": "caf\xc3\xa9"}\n\n',
        b'data: {"message_type": "assistant_message", "content": "a\xffb"}\n\ndata: [1]\n\n',
        b"data: [DONE]\n\n",
        b'data: {"message_type": "assistant_message", "content": "after done"}\n\n',
    ]

    async def read(pieces: list[bytes]) -> list[dict[str, Any]]:
        return [m async for m in RawLettaStream(CLIENT, FakeBody(pieces))]

    assert SSEParser().data_of(frames[1]) is not None  # the fast path is the one taken
    byte_by_byte = [bytes([b]) for b in b"".join(frames)]  # never whole events: the general parser
    expected = [
        {"message_type": "assistant_message", "content": "café"},
        {"message_type": "assistant_message", "content": "a\ufffdb"},
    ]
    assert anyio.run(read, frames) == expected
    assert anyio.run(read, byte_by_byte) == expected
