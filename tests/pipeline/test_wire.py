"""The JSON of each event type, and what parsing refuses."""

from __future__ import annotations

import pytest

from pipeline.events import Done, Error, Keepalive, Reasoning, Status, Text, ToolCall, ToolResult, Usage
from pipeline.wire import ProtocolError, dumps, parse_event, to_wire


@pytest.mark.parametrize(
    ("event", "json"),
    [
        (Status("Thinking..."), {"type": "status", "content": "Thinking..."}),
        (Reasoning("hmm"), {"type": "reasoning", "content": "hmm"}),
        (Text("Hi"), {"type": "message", "content": "Hi"}),
        (ToolCall("f", "{}", "c"), {"type": "tool_call", "name": "f", "arguments": "{}", "call_id": "c"}),
        (
            ToolResult("f", False, "no", "c"),
            {"type": "tool_result", "name": "f", "ok": False, "preview": "no", "call_id": "c"},
        ),
        (Done(), {"type": "done"}),
        (
            Done("end_turn", Usage(total_tokens=3)),
            {"type": "done", "stop_reason": "end_turn", "usage": {"total_tokens": 3}},
        ),
        (Error("boom"), {"type": "error", "message": "boom"}),
        (Error("boom", "upstream_timeout"), {"type": "error", "message": "boom", "code": "upstream_timeout"}),
    ],
)
def test_wire_shape_and_back(event: object, json: dict[str, object]) -> None:
    assert to_wire(event) == json  # type: ignore[arg-type]
    assert parse_event(dumps(event)) == event  # type: ignore[arg-type]


def test_type_comes_first() -> None:
    assert dumps(Error("x", "y")).startswith('{"type":"error"')


def test_keepalive_has_no_json() -> None:
    with pytest.raises(TypeError):
        to_wire(Keepalive())


def test_unknown_type_is_none_for_forward_compatibility() -> None:
    assert parse_event('{"type": "citation", "url": "x"}') is None


def test_extra_fields_are_ignored() -> None:
    assert parse_event('{"type": "message", "content": "x", "new": 1}') == Text("x")


@pytest.mark.parametrize(
    "data",
    [
        "",
        "not json",
        "[1]",
        '{"content": "x"}',
        '{"type": 3}',
        '{"type": "message"}',
        '{"type": "message", "content": 5}',
        '{"type": "tool_result", "name": null, "ok": "yes"}',
    ],
)
def test_malformed_payloads_are_protocol_errors(data: str) -> None:
    with pytest.raises(ProtocolError):
        parse_event(data)
