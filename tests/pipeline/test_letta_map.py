"""Letta's message types → our events, one chunk at a time, no event loop."""

from __future__ import annotations

from typing import Any

from letta_client.types.agents.letta_assistant_message_content_union import (
    LettaAssistantMessageContentUnion,
)

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
from pipeline.letta_map import LettaMapper

from . import letta_chunks as c


def run(chunks: list[Any], mapper: LettaMapper | None = None) -> list[Event]:
    mapper = mapper or LettaMapper()
    out = [e for chunk in chunks for e in mapper.feed(chunk)]
    return out + mapper.finish()


def test_thinking_then_answer_ends_with_done() -> None:
    assert run(c.answer_turn(["Hello", " there"])) == [
        Keepalive(),
        Status("Thinking..."),
        Reasoning("Let me think."),
        Text("Hello"),
        Text(" there"),
        Done("end_turn", Usage(10, 5, 15, 1), "run-1"),
    ]


def test_thinking_status_is_shown_once_per_reasoning_phase() -> None:
    events = run([c.reasoning("a"), c.reasoning("b"), c.assistant("x"), c.reasoning("c"), c.stop()])
    assert [e for e in events if isinstance(e, Status)] == [Status("Thinking...")] * 2


def test_thinking_off_drops_reasoning_and_its_status() -> None:
    events = run([c.reasoning("secret"), c.hidden(), c.assistant("x"), c.stop()], LettaMapper(show_reasoning=False))
    assert events == [Text("x"), Done("end_turn", None, "run-1")]


def test_hidden_reasoning_shows_thinking_without_text() -> None:
    assert run([c.hidden(), c.stop()])[:1] == [Status("Thinking...")]


def test_tool_call_is_announced_once_and_completed_with_all_argument_deltas() -> None:
    events = run(
        [
            c.tool_call("call-1", "conversation_search", '{"que'),
            c.tool_call("call-1", None, 'ry": "essay"}'),
            c.tool_return("call-1", "3 results"),
            c.assistant("Found it."),
            c.stop(),
        ]
    )
    assert events == [
        Status("Using conversation_search..."),
        ToolCall("conversation_search", '{"query": "essay"}', "call-1"),
        ToolResult("conversation_search", True, "3 results", "call-1"),
        Text("Found it."),
        Done("end_turn", None, "run-1"),
    ]


def test_two_calls_in_a_row_are_two_tool_calls() -> None:
    events = run([c.tool_call("1", "a", "{}"), c.tool_call("2", "b", "{}"), c.stop()])
    assert [e for e in events if isinstance(e, ToolCall)] == [
        ToolCall("a", "{}", "1"),
        ToolCall("b", "{}", "2"),
    ]


def test_failed_tool_and_preview_is_bounded() -> None:
    mapper = LettaMapper(preview_chars=5)
    events = run([c.tool_call("1", "t", ""), c.tool_return("1", "x" * 100, "error"), c.stop()], mapper)
    assert ToolResult("t", False, "xxxxx", "1") in events


def test_assistant_content_parts_are_joined() -> None:
    parts = [LettaAssistantMessageContentUnion(text="a"), LettaAssistantMessageContentUnion(text="b")]
    assert run([c.assistant(parts), c.stop()])[0] == Text("ab")


def test_empty_deltas_make_no_events() -> None:
    assert run([c.assistant(""), c.reasoning(""), c.stop()]) == [
        Status("Thinking..."),
        Done("end_turn", None, "run-1"),
    ]


def test_error_message_is_terminal_and_no_done_follows() -> None:
    events = run([c.assistant("par"), c.error("boom"), c.stop("error"), c.usage()])
    assert events == [Text("par"), Error("boom", "llm_error")]


def test_error_stop_reason_becomes_error() -> None:
    assert run([c.stop("llm_api_error")]) == [
        Error("The agent stopped with an error (llm_api_error).", "llm_api_error")
    ]


def test_stream_without_stop_reason_is_incomplete() -> None:
    events = run([c.assistant("half")])
    assert isinstance(events[-1], Error)
    assert events[-1].code == "incomplete"


def test_our_error_events_pass_through_as_terminal() -> None:
    failure = Error("The agent server could not be reached.", "upstream_unreachable")
    assert run([c.assistant("x"), failure]) == [Text("x"), failure]


def test_unknown_and_irrelevant_types_are_dropped_not_crashed_on() -> None:
    assert run([c.user("hi"), object(), {"message_type": "new_thing"}, c.stop()]) == [Done("end_turn", None, None)]


def test_max_steps_is_a_done_with_its_reason() -> None:
    assert run([c.stop("max_steps")]) == [Done("max_steps", None, None)]


def test_nothing_after_finish() -> None:
    mapper = LettaMapper()
    mapper.finish()
    assert mapper.feed(c.assistant("late")) == []
    assert mapper.finish() == []


def test_letta_error_event_raised_by_the_sdk_keeps_letta_words() -> None:
    import httpx
    from letta_client import APIStatusError

    from pipeline.letta_turn import describe_upstream_error

    body = {
        "message_type": "error_message",
        "error_type": "llm_error",
        "message": "An error occurred with the LLM request.",
    }
    request = httpx.Request("POST", "http://letta.test/v1/agents/a/messages")
    exc = APIStatusError("error", response=httpx.Response(200, request=request), body=body)
    assert describe_upstream_error(exc) == Error("An error occurred with the LLM request.", "llm_error")
