"""Real letta-client message objects, shaped as the Letta server streams them (see shared facts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from letta_client.types import ToolReturnMessage
from letta_client.types.agents import (
    AssistantMessage,
    HiddenReasoningMessage,
    ReasoningMessage,
    ToolCallMessage,
    UserMessage,
)
from letta_client.types.agents.letta_streaming_response import (
    LettaErrorMessage,
    LettaPing,
    LettaStopReason,
    LettaUsageStatistics,
)
from letta_client.types.agents.tool_call_delta import ToolCallDelta

NOW = datetime(2026, 11, 26, tzinfo=UTC)
RUN = "run-1"


def ping() -> LettaPing:
    return LettaPing(id="p", date=NOW, message_type="ping", run_id=RUN)


def reasoning(text: str) -> ReasoningMessage:
    return ReasoningMessage(id="r", date=NOW, reasoning=text, message_type="reasoning_message", run_id=RUN)


def hidden() -> HiddenReasoningMessage:
    return HiddenReasoningMessage(id="h", date=NOW, state="redacted", run_id=RUN)


def assistant(content: Any) -> AssistantMessage:
    return AssistantMessage(id="a", date=NOW, content=content, message_type="assistant_message", run_id=RUN)


def tool_call(call_id: str, name: str | None, arguments: str) -> ToolCallMessage:
    delta = ToolCallDelta(tool_call_id=call_id, name=name, arguments=arguments)
    return ToolCallMessage(id="t", date=NOW, tool_call=delta, message_type="tool_call_message", run_id=RUN)


def tool_return(call_id: str, returned: str, status: str = "success") -> ToolReturnMessage:
    return ToolReturnMessage(
        id="tr",
        date=NOW,
        status=status,  # type: ignore[arg-type]
        tool_call_id=call_id,
        tool_return=returned,
        message_type="tool_return_message",
        run_id=RUN,
    )


def stop(reason: str = "end_turn") -> LettaStopReason:
    return LettaStopReason(stop_reason=reason, message_type="stop_reason")  # type: ignore[arg-type]


def usage() -> LettaUsageStatistics:
    return LettaUsageStatistics(prompt_tokens=10, completion_tokens=5, total_tokens=15, step_count=1)


def error(message: str = "model exploded", error_type: str = "llm_error") -> LettaErrorMessage:
    return LettaErrorMessage(error_type=error_type, message=message, message_type="error_message", run_id=RUN)


def user(text: str) -> UserMessage:
    return UserMessage(id="u", date=NOW, content=text, message_type="user_message")


def answer_turn(words: list[str]) -> list[Any]:
    """ping → one reasoning delta → assistant deltas → stop_reason → usage, as observed."""
    return [ping(), reasoning("Let me think."), *[assistant(w) for w in words], stop(), usage()]


def numbered(chunks: list[Any], run_id: str = RUN) -> list[Any]:
    """As Letta's background mode streams them: ``run_id`` on each, ``seq_id`` counting from 1 (pings: none)."""
    out, seq = [], 0
    for chunk in chunks:
        fields = type(chunk).model_fields
        update: dict[str, Any] = {"run_id": run_id} if "run_id" in fields else {}
        if "seq_id" in fields and chunk.message_type != "ping":
            seq += 1
            update["seq_id"] = seq
        out.append(chunk.model_copy(update=update))
    return out
