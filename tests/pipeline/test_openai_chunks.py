"""The OpenAI chunk encoder: the pure core without a loop, the stage under asyncio and trio.

Every chunk and completion is also validated with the official ``openai`` client's own
models, so the shape is what OpenAI clients parse, not what we think they parse.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import anyio
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pipeline.compose import open_pipeline
from pipeline.errors import ConsumerStalled
from pipeline.events import Done, Error, Event, Keepalive, Reasoning, Status, Text, ToolCall, ToolResult, Usage
from pipeline.filter import filter_letta
from pipeline.keepalive import keepalive
from pipeline.letta_map import THINKING
from pipeline.openai_chunks import ChunkEncoder, completion, encode_openai, finish_reason, usage_body
from pipeline.source import read_source
from pipeline.sse import SSEParser
from pipeline.streams import Receive
from pipeline.throttle import throttle

from . import letta_chunks as c
from .fakes import FakeStream, endless

TURN: list[Event] = [
    Status(THINKING),
    Reasoning("Let me think."),
    Status("Using conversation_search..."),
    ToolCall("conversation_search", '{"query": "x"}', "call-1"),
    ToolResult("conversation_search", True, "found", "call-1"),
    Reasoning("Now I know."),
    Text("Hello"),
    Text(" world"),
    Done("end_turn", Usage(10, 5, 15, 2)),
]


def frames(data: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE byte stream: JSON objects, and the string ``[DONE]``."""
    parser = SSEParser()
    events = parser.feed(data) + parser.close()
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in events]


def encode_all(events: list[Event], encoder: ChunkEncoder | None = None) -> list[Any]:
    encoder = encoder or ChunkEncoder("chatcmpl-1", "tutor", 1_700_000_000)
    return frames(b"".join(encoder.encode(e) for e in events) + encoder.close())


def deltas(chunks: list[Any], key: str) -> str:
    return "".join(
        ch["choices"][0]["delta"].get(key) or "" for ch in chunks if isinstance(ch, dict) and ch.get("choices")
    )


# ---------------------------------------------------------------- the pure core


def test_a_whole_turn_as_openai_chunks() -> None:
    out = encode_all(TURN)
    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)  # the official client's model accepts every chunk
        assert chunk["id"] == "chatcmpl-1"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "tutor"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in ch["choices"][0]["delta"] for ch in chunks[1:])
    assert deltas(chunks, "content") == "Hello world"
    assert deltas(chunks, "reasoning_content") == "Let me think.\n\nUsing conversation_search...\n\nNow I know."
    last = chunks[-1]
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert last["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert all(ch["choices"][0]["finish_reason"] is None for ch in chunks[:-1])
    assert "tool_calls" not in json.dumps(out)  # a client would try to run them


def test_thinking_status_and_tool_calls_say_nothing() -> None:
    encoder = ChunkEncoder("c", "tutor", 0)
    assert encoder.encode(Status(THINKING)) == b""
    assert encoder.encode(ToolCall("conversation_search", "{}", "x")) == b""
    assert encoder.encode(ToolResult("conversation_search", True)) == b""


def test_a_tool_line_is_a_paragraph_of_its_own() -> None:
    first = encode_all([Status("Using a...")])
    assert deltas(first[:-1], "reasoning_content") == "Using a...\n\n"
    mid_line = encode_all([Reasoning("hmm"), Status("Using a..."), ToolResult("a", False), Reasoning("so")])
    assert deltas(mid_line[:-1], "reasoning_content") == "hmm\n\nUsing a...\n\na failed.\n\nso"
    after_newline = encode_all([Reasoning("hmm\n"), Status("Using a...")])
    assert deltas(after_newline[:-1], "reasoning_content") == "hmm\nUsing a...\n\n"


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        (None, "stop"),
        ("no_tool_call", "stop"),
        ("cancelled", "stop"),
        ("requires_approval", "stop"),
        ("max_steps", "length"),
        ("max_tokens_exceeded", "length"),
    ],
)
def test_finish_reason_maps_letta_stop_reasons(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected
    last = encode_all([Done(stop_reason)])[-2]
    assert last["choices"][0]["finish_reason"] == expected


def test_usage_counts_default_to_zero_and_the_total_to_their_sum() -> None:
    assert usage_body(None) == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert usage_body(Usage(prompt_tokens=7, completion_tokens=3)) == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
    }


def test_an_empty_answer_still_opens_with_the_role() -> None:
    out = encode_all([Done("end_turn")])
    assert out[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert out[0]["choices"][0]["finish_reason"] == "stop"
    assert out[-1] == "[DONE]"


def test_an_error_is_an_openai_error_object_then_done_and_then_nothing() -> None:
    encoder = ChunkEncoder("c", "tutor", 0)
    out = encode_all([Text("Hel"), Error("The model failed.", "llm_api_error"), Text("lo"), Done()], encoder)
    assert out[-1] == "[DONE]"
    assert out[-2] == {
        "error": {"message": "The model failed.", "type": "server_error", "code": "llm_api_error", "param": None}
    }
    assert deltas(out[:-2], "content") == "Hel"
    assert encoder.finished
    assert encoder.failed


def test_keepalives_are_comments_until_the_end() -> None:
    encoder = ChunkEncoder("c", "tutor", 0)
    assert encoder.encode(Keepalive()) == b": keepalive\n\n"
    encoder.encode(Done())
    assert encoder.encode(Keepalive()) == b""
    assert encoder.close() == b""


def test_events_that_end_without_a_terminal_close_with_an_incomplete_error() -> None:
    out = encode_all([Text("partial")])
    assert out[-2]["error"]["code"] == "incomplete"
    assert out[-1] == "[DONE]"


def test_text_is_json_escaped_so_it_cannot_break_the_stream() -> None:
    nasty = "line\n\ndata: [DONE]\n\nend “quoted” ✓"
    out = encode_all([Text(nasty), Done()])
    assert deltas(out[:-1], "content") == nasty
    assert out.count("[DONE]") == 1


# ---------------------------------------------------------------- the whole (non-streaming) completion


def test_completion_of_a_whole_turn() -> None:
    body = completion(TURN, id="chatcmpl-2", model="tutor", created=5)
    assert isinstance(body, dict)
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == "Hello world"
    assert parsed.choices[0].finish_reason == "stop"
    assert body["choices"][0]["message"]["reasoning_content"] == (
        "Let me think.\n\nUsing conversation_search...\n\nNow I know."
    )
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert body["object"] == "chat.completion"


def test_completion_without_reasoning_has_no_reasoning_field() -> None:
    body = completion([Text("Hi"), Done("max_steps")], id="c", model="tutor", created=0)
    assert isinstance(body, dict)
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "length"


def test_a_failed_turn_is_its_error() -> None:
    failure = Error("boom", "llm_api_error")
    assert completion([Text("Hi"), failure], id="c", model="tutor", created=0) == failure


# ---------------------------------------------------------------- the stage (asyncio and trio)


async def collect(recv: Receive) -> bytes:
    return b"".join([item async for item in recv])


@pytest.mark.anyio
async def test_stage_encodes_a_letta_turn_through_the_real_stages() -> None:
    chunks = [
        c.ping(),
        c.reasoning("Let me think."),
        c.tool_call("call-1", "conversation_search", '{"query":'),
        c.tool_call("call-1", None, ' "x"}'),
        c.tool_return("call-1", "found"),
        *[c.assistant(w) for w in ["Hello", " student"]],
        c.stop(),
        c.usage(),
    ]
    encoder = ChunkEncoder("chatcmpl-3", "tutor", 0)
    async with open_pipeline(
        partial(read_source, FakeStream(chunks)),
        filter_letta,
        partial(throttle, window=0.01),
        partial(keepalive, interval=60),
        partial(encode_openai, encoder=encoder),
    ) as recv:
        out = frames(await collect(recv))
    assert out[-1] == "[DONE]"
    assert deltas(out[:-1], "content") == "Hello student"
    assert deltas(out[:-1], "reasoning_content") == "Let me think.\n\nUsing conversation_search...\n\n"
    assert out[-2]["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert out[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.anyio
async def test_stage_closes_a_turn_that_never_ended() -> None:
    async with open_pipeline(
        partial(read_source, FakeStream([Text("cut")])), partial(encode_openai, encoder=ChunkEncoder("c", "m", 0))
    ) as recv:
        out = frames(await collect(recv))
    assert out[-2]["error"]["code"] == "incomplete"
    assert out[-1] == "[DONE]"


@pytest.mark.anyio
async def test_stage_keepalives_while_the_agent_is_silent() -> None:
    gate = anyio.Event()
    stream = FakeStream([Text("late"), Done()], gate=gate)
    async with open_pipeline(
        partial(read_source, stream),
        partial(keepalive, interval=0.05),
        partial(encode_openai, encoder=ChunkEncoder("c", "m", 0)),
    ) as recv:
        with anyio.fail_after(5):
            assert await recv.receive() == b": keepalive\n\n"
        gate.set()
        out = frames(await collect(recv))
    assert deltas(out[:-1], "content") == "late"


@pytest.mark.anyio
async def test_a_stalled_consumer_ends_the_pipeline_and_closes_the_source() -> None:
    stream = endless(Text("tick"))

    async def read_one_then_stall() -> None:
        stage = partial(encode_openai, encoder=ChunkEncoder("c", "m", 0), send_timeout=0.05)
        async with open_pipeline(partial(read_source, stream), stage) as recv:
            await recv.receive()
            await anyio.sleep_forever()  # the client stops reading

    with anyio.fail_after(10), pytest.raises(ExceptionGroup) as info:
        await read_one_then_stall()
    assert info.group_contains(ConsumerStalled)
    assert stream.closed
