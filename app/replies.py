"""A whole turn's reply (``POST /chat``), built from the same events the stream sends."""

from __future__ import annotations

from typing import Any

from pipeline.events import Done, Error, Event, Reasoning, Text, ToolCall, ToolResult
from pipeline.letta_map import LettaMapper

from .bodies import ChatReply, ToolUse


def turn_events(response: Any) -> tuple[list[Event], LettaMapper]:
    """Letta's non-streaming ``LettaResponse`` mapped like a stream, ending with its terminal event."""
    mapper = LettaMapper()
    events = [e for message in response.messages for e in mapper.feed(message)]
    mapper.stop_reason = getattr(response.stop_reason, "stop_reason", None) or "end_turn"
    return events + mapper.finish(), mapper


def chat_reply(agent_id: str, events: list[Event], run_id: str | None) -> ChatReply | Error:
    """The reply, or the turn's :class:`Error` if it failed."""
    failure = next((e for e in events if isinstance(e, Error)), None)
    if failure is not None:
        return failure
    results = {e.call_id: e.ok for e in events if isinstance(e, ToolResult)}
    return ChatReply(
        agent_id=agent_id,
        response="".join(e.content for e in events if isinstance(e, Text)),
        reasoning="".join(e.content for e in events if isinstance(e, Reasoning)),
        tools=[ToolUse(e.name, e.arguments, results.get(e.call_id)) for e in events if isinstance(e, ToolCall)],
        stop_reason=next((e.stop_reason for e in events if isinstance(e, Done)), None),
        run_id=run_id,
    )
