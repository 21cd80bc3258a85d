"""The real Letta 0.16.8 server on the scripted model: what a stream looks like.

These tests pin down the ``message_type`` sequences the bridge has to map
(observed sequences are asserted run-length compressed, e.g. twelve
``assistant_message`` deltas count as one entry).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import pytest
from letta_client import APIStatusError, AsyncLetta, InternalServerError

from devstack.stack import LocalStack
from tests.scripted_llm import REASONING, TOOL_ARGUMENTS, TOOL_NAME, expected_answer, word_deltas

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def collect(client: AsyncLetta, agent_id: str, prompt: str, *, stream_tokens: bool = True) -> list[Any]:
    """Every streamed message for one turn (``messages.create(streaming=True)``, as the service calls it)."""
    stream = await client.agents.messages.create(agent_id, streaming=True, input=prompt, stream_tokens=stream_tokens)
    async with stream:
        return [message async for message in stream]


def kinds(messages: list[Any]) -> list[str]:
    """``message_type``s with consecutive repeats collapsed."""
    return [kind for kind, _ in itertools.groupby(m.message_type for m in messages)]


def of_type(messages: list[Any], kind: str) -> list[Any]:
    return [m for m in messages if m.message_type == kind]


async def test_default_prompt_streams_word_deltas(letta_client: AsyncLetta, agent_id: str) -> None:
    prompt = "Hello there"
    messages = await collect(letta_client, agent_id, prompt)

    assert kinds(messages) == ["ping", "assistant_message", "stop_reason", "usage_statistics"]
    chunks = of_type(messages, "assistant_message")
    assert [c.content for c in chunks] == word_deltas(expected_answer(prompt))
    assert len({c.id for c in chunks}) == 1  # deltas of one message
    assert all(c.run_id for c in chunks)
    assert of_type(messages, "stop_reason")[0].stop_reason == "end_turn"


async def test_think_streams_reasoning_before_answer(letta_client: AsyncLetta, agent_id: str) -> None:
    prompt = "[think] Why?"
    messages = await collect(letta_client, agent_id, prompt)

    assert kinds(messages) == ["ping", "reasoning_message", "assistant_message", "stop_reason", "usage_statistics"]
    assert "".join(m.reasoning for m in of_type(messages, "reasoning_message")) == REASONING
    assert "".join(m.content for m in of_type(messages, "assistant_message")) == expected_answer(prompt)


async def test_tool_call_then_return_then_answer(letta_client: AsyncLetta, agent_id: str) -> None:
    prompt = "[tool] What did we say?"
    messages = await collect(letta_client, agent_id, prompt)

    assert kinds(messages) == [
        "ping",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    calls = of_type(messages, "tool_call_message")
    # Only the first chunk names the tool; the rest are argument deltas with the same id.
    assert [c.tool_call.name for c in calls] == [TOOL_NAME] + [None] * (len(calls) - 1)
    assert len({c.tool_call.tool_call_id for c in calls}) == 1
    assert "".join(c.tool_call.arguments or "" for c in calls) == TOOL_ARGUMENTS
    (tool_return,) = of_type(messages, "tool_return_message")
    assert tool_return.status == "success"
    assert tool_return.tool_call_id == calls[0].tool_call.tool_call_id
    assert "".join(m.content for m in of_type(messages, "assistant_message")) == expected_answer(prompt)


async def test_model_failure_streams_stop_reason_then_raises(letta_client: AsyncLetta, agent_id: str) -> None:
    """A model HTTP 500 mid-turn, as the SDK shows it.

    Wire (HTTP 200 SSE): ``ping`` -> ``data: {"message_type":"stop_reason","stop_reason":"llm_api_error"}``
    -> ``event: error`` + ``data: {"message_type":"error_message","error_type":"llm_error",
    "message":"An error occurred with the LLM request.","detail":"INTERNAL_SERVER_ERROR: OpenAI API
    error: Error code: 500 - ...","run_id":...}`` -> ``data: [DONE]``.
    The SDK yields ``ping`` and ``stop_reason`` and then RAISES ``APIStatusError`` (status_code 200)
    for the ``event: error`` frame, with the error_message dict as ``.body``: no ``error_message``
    object is ever yielded. Letta tried the model 3 times (~1.5 s) before giving up.
    """
    seen: list[Any] = []

    async def drain() -> None:
        stream = await letta_client.agents.messages.create(
            agent_id, streaming=True, input="[fail] now", stream_tokens=True
        )
        async with stream:
            async for message in stream:  # keep what arrived before the SDK raises
                seen.append(message)

    with pytest.raises(APIStatusError) as raised:
        await drain()

    assert kinds(seen) == ["ping", "stop_reason"]
    assert seen[-1].stop_reason == "llm_api_error"
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["message_type"] == "error_message"
    assert body["error_type"] == "llm_error"
    assert "scripted failure" in body["detail"]
    assert body["run_id"] == seen[0].run_id


async def test_model_failure_non_streaming_is_http_500(letta_client: AsyncLetta, agent_id: str) -> None:
    """Non-streaming: ``InternalServerError`` (500), body ``{"error": {"type": "llm_error", ...}}``."""
    with pytest.raises(InternalServerError) as raised:
        await letta_client.agents.messages.create(agent_id, input="[fail] now")
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "llm_error"


async def test_stream_without_token_streaming_sends_one_message(letta_client: AsyncLetta, agent_id: str) -> None:
    prompt = "[long 30] whole"
    messages = await collect(letta_client, agent_id, prompt, stream_tokens=False)

    assert [m.message_type for m in messages] == ["ping", "assistant_message", "stop_reason", "usage_statistics"]
    assert of_type(messages, "assistant_message")[0].content == expected_answer(prompt)


async def test_non_streaming_create_returns_answer(letta_client: AsyncLetta, agent_id: str) -> None:
    prompt = "[long 7] please"
    response = await letta_client.agents.messages.create(agent_id, input=prompt)

    assert [m.message_type for m in response.messages] == ["assistant_message"]
    (answer,) = of_type(response.messages, "assistant_message")
    assert answer.content == expected_answer(prompt) == "w1 w2 w3 w4 w5 w6 w7"
    assert response.stop_reason.stop_reason == "end_turn"


async def test_agent_survives_stack_restart(letta_stack: LocalStack, letta_client: AsyncLetta, agent_id: str) -> None:
    """The data dir is reused: the agent and its history are still there and it still answers."""
    await letta_client.agents.messages.create(agent_id, input="remember me")
    began = time.monotonic()
    letta_stack.stop()
    letta_stack.start()
    print(f"\nstack restart took {time.monotonic() - began:.1f} s: {letta_stack.startup_seconds}")

    agent = await letta_client.agents.retrieve(agent_id)
    assert agent.id == agent_id
    history = [m async for m in letta_client.agents.messages.list(agent_id)]
    assert any(getattr(m, "content", None) == "remember me" for m in history)
    response = await letta_client.agents.messages.create(agent_id, input="again")
    assert [m.content for m in of_type(response.messages, "assistant_message")] == [expected_answer("again")]


async def test_slow_marker_paces_the_deltas(letta_client: AsyncLetta, agent_id: str) -> None:
    """Letta forwards deltas as they come: the scripted pacing is visible to a consumer."""
    prompt = "[slow 150] [long 6]"
    arrivals: list[float] = []
    stream = await letta_client.agents.messages.create(agent_id, streaming=True, input=prompt, stream_tokens=True)
    async with stream:
        async for message in stream:
            if message.message_type == "assistant_message":
                arrivals.append(time.monotonic())
    assert len(arrivals) == 6
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.05, gaps
    assert arrivals[-1] - arrivals[0] > 0.5


def text_of(messages: list[Any]) -> str:
    return "".join(m.content for m in of_type(messages, "assistant_message"))


async def final_status(client: AsyncLetta, run_id: str) -> str:
    """The run's status once terminal (polled up to 10 s): Letta records it just after the last chunk."""
    for _ in range(100):
        status = (await client.runs.retrieve(run_id)).status
        if status not in ("created", "running"):
            return str(status)
        await anyio.sleep(0.1)
    raise AssertionError(f"run {run_id} still {status} after 10 s")


async def test_a_foreground_run_outlives_its_client_and_its_answer_can_be_read_back(
    letta_client: AsyncLetta, agent_id: str
) -> None:
    """What a takeover relies on (Letta 0.16.8): a foreground run goes on when its client leaves, ends
    ``completed``, and ``runs.messages.list`` returns its whole answer; foreground chunks carry no seq_id."""
    prompt = "[slow 50] [long 40] outlive me"
    first: list[Any] = []
    stream = await letta_client.agents.messages.create(
        agent_id, streaming=True, input=prompt, stream_tokens=True, include_pings=True
    )
    async for message in stream:
        first.append(message)
        if len(of_type(first, "assistant_message")) == 5:
            break
    await stream.close()
    run_id = first[-1].run_id
    assert all(getattr(m, "seq_id", None) is None for m in first)
    assert (await letta_client.runs.retrieve(run_id)).status == "running"  # the client left; the run did not

    assert await final_status(letta_client, run_id) == "completed"
    messages = [m async for m in letta_client.runs.messages.list(run_id, order="asc", limit=1000)]
    answer = "".join(m.content for m in messages if m.message_type == "assistant_message")
    assert answer == expected_answer(prompt)
    assert (await letta_client.runs.retrieve(run_id)).stop_reason == "end_turn"
