"""Letta's streamed messages → our events, as a pure state machine.

:class:`LettaMapper` is fed the SDK's ``LettaStreamingResponse`` values one at a
time and answers with the events they mean; :meth:`LettaMapper.finish` closes the
turn with exactly one terminal event (:class:`~pipeline.events.Done` or
:class:`~pipeline.events.Error`).  It holds what the stream spreads over several
chunks: whether a "Thinking..." status was already shown, which tool a
``tool_call_id`` belongs to (only the first delta of a call carries the name), the
arguments of the call being streamed, the stop reason and the usage.

Events of ours (e.g. an :class:`~pipeline.events.Error` a source made of an upstream
failure) pass through unchanged.  Anything else it does not know is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs
from letta_client.types import ToolReturnMessage
from letta_client.types.agents import (
    AssistantMessage,
    HiddenReasoningMessage,
    ReasoningMessage,
    ToolCallMessage,
)
from letta_client.types.agents.letta_streaming_response import (
    LettaErrorMessage,
    LettaPing,
    LettaStopReason,
    LettaStreamingResponse,
    LettaUsageStatistics,
)

from .events import (
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

THINKING: Final = "Thinking..."

ERROR_STOP_REASONS: Final = frozenset(
    {
        "error",
        "llm_api_error",
        "invalid_llm_response",
        "invalid_tool_call",
        "insufficient_credits",
        "context_window_overflow_in_system_prompt",
    }
)
"""Stop reasons that mean the turn failed rather than ended."""

OUR_EVENTS: Final = (Status, Reasoning, Text, ToolCall, ToolResult, Done, Error, Keepalive)


def using(tool_name: str) -> str:
    """The status line shown while a tool runs."""
    return f"Using {tool_name}..."


@attrs.define
class _OpenCall:
    call_id: str | None
    name: str | None
    arguments: list[str] = attrs.field(factory=list)
    announced: bool = False


@attrs.define
class LettaMapper:
    """Maps one turn's Letta chunks to events.  One instance per turn.

    ``show_reasoning=False`` drops reasoning text and the "Thinking..." status
    ("thinking off"); ``preview_chars`` bounds a tool result's preview.
    """

    show_reasoning: bool = True
    preview_chars: int = 200
    run_id: str | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    _thinking: bool = attrs.field(default=False, init=False)
    _call: _OpenCall | None = attrs.field(default=None, init=False)
    _tool_names: dict[str, str] = attrs.field(factory=dict, init=False)
    _failed: bool = attrs.field(default=False, init=False)
    _finished: bool = attrs.field(default=False, init=False)

    def feed(self, chunk: object) -> list[Event]:
        """The events ``chunk`` means, in order.

        ``chunk`` is an SDK model, or the same message as Letta sent it: its JSON object as
        a ``dict`` (what :class:`~pipeline.letta_raw.RawLettaStream` yields, without a
        pydantic model per chunk).  Both give the same events.
        """
        if self._finished:
            return []
        raw = type(chunk) is dict
        run_id = chunk.get("run_id") if raw else getattr(chunk, "run_id", None)  # type: ignore[attr-defined]
        if isinstance(run_id, str) and run_id:
            self.run_id = run_id
        return self._map_raw(chunk) if raw else self._map(chunk)  # type: ignore[arg-type]

    def _map(self, chunk: object) -> list[Event]:
        out: list[Event] = []
        if isinstance(chunk, ToolCallMessage):
            self._tool_call(chunk, out)
            return out
        if not isinstance(chunk, (LettaPing, LettaUsageStatistics)):
            self._close_call(out)
        if isinstance(chunk, ReasoningMessage):
            self._think(out)
            if self.show_reasoning and chunk.reasoning:
                out.append(Reasoning(chunk.reasoning))
            return out
        if isinstance(chunk, HiddenReasoningMessage):
            self._think(out)
            return out
        if isinstance(chunk, (LettaPing, Keepalive)):
            return [Keepalive()]
        if isinstance(chunk, (LettaUsageStatistics, LettaStopReason)):
            self._remember(chunk)
            return out
        self._thinking = False
        if isinstance(chunk, AssistantMessage):
            text = _assistant_text(chunk)
            if text:
                out.append(Text(text))
        elif isinstance(chunk, ToolReturnMessage):
            out.extend(self._tool_results(chunk))
        elif isinstance(chunk, LettaErrorMessage):
            out.append(self._fail(Error(_error_text(chunk), chunk.error_type or "letta_error")))
        elif isinstance(chunk, Error):
            out.append(self._fail(chunk))
        elif isinstance(chunk, OUR_EVENTS) and not isinstance(chunk, Done):
            out.append(chunk)
        return out

    def _map_raw(self, chunk: dict[str, Any]) -> list[Event]:
        """:meth:`_map` for a message as Letta sent it (a JSON object), rule for rule."""
        kind = chunk.get("message_type")
        if kind is None:
            kind = _untagged_kind(chunk)
        out: list[Event] = []
        if kind == "assistant_message":  # the hot path first
            self._close_call(out)
            self._thinking = False
            text = _raw_assistant_text(chunk.get("content"))
            if text:
                out.append(Text(text))
            return out
        if kind == "tool_call_message":
            self._raw_tool_call(chunk, out)
            return out
        if kind == "ping":
            return [Keepalive()]
        if kind == "usage_statistics":
            self._remember_raw(kind, chunk)
            return out
        self._close_call(out)
        if kind == "reasoning_message":
            self._think(out)
            reasoning = chunk.get("reasoning")
            if self.show_reasoning and reasoning:
                out.append(Reasoning(reasoning))
            return out
        if kind == "hidden_reasoning_message":
            self._think(out)
            return out
        if kind == "stop_reason":
            self._remember_raw(kind, chunk)
            return out
        self._thinking = False
        if kind == "tool_return_message":
            out.extend(self._raw_tool_results(chunk))
        elif kind == "error_message":
            message = str(chunk.get("message") or "")
            detail = chunk.get("detail")
            text = f"{message}: {detail}" if detail else message
            out.append(self._fail(Error(text, chunk.get("error_type") or "letta_error")))
        return out

    def _remember_raw(self, kind: str, chunk: dict[str, Any]) -> None:
        if kind == "stop_reason":
            self.stop_reason = chunk.get("stop_reason")
        else:
            self.usage = Usage(
                prompt_tokens=chunk.get("prompt_tokens"),
                completion_tokens=chunk.get("completion_tokens"),
                total_tokens=chunk.get("total_tokens"),
                step_count=chunk.get("step_count"),
            )

    def _raw_tool_call(self, chunk: dict[str, Any], out: list[Event]) -> None:
        calls = chunk.get("tool_calls")
        deltas = calls if isinstance(calls, list) else [chunk.get("tool_call") or {}]
        self._tool_deltas(((d.get("tool_call_id"), d.get("name"), d.get("arguments")) for d in deltas), out)

    def _raw_tool_results(self, chunk: dict[str, Any]) -> list[Event]:
        returns = chunk.get("tool_returns")
        if returns:
            return [
                self._result(r.get("tool_call_id"), r.get("status"), _text_or_empty(r.get("tool_return")))
                for r in returns
            ]
        return [self._result(chunk.get("tool_call_id"), chunk.get("status"), chunk.get("tool_return") or "")]

    def finish(self) -> list[Event]:
        """End of the upstream stream: flush, then exactly one terminal event (unless one was sent)."""
        if self._finished:
            return []
        out: list[Event] = []
        self._close_call(out)
        self._finished = True
        if not self._failed:
            out.extend(self._terminal())
        return out

    def _terminal(self) -> list[Event]:
        out: list[Event] = []
        if self.stop_reason is None:
            out.append(Error("The agent's stream ended before the turn finished.", "incomplete"))
        elif self.stop_reason in ERROR_STOP_REASONS:
            out.append(Error(f"The agent stopped with an error ({self.stop_reason}).", self.stop_reason))
        else:
            out.append(Done(self.stop_reason, self.usage, self.run_id))
        return out

    def _fail(self, error: Error) -> Error:
        self._failed = True
        return error

    def _think(self, out: list[Event]) -> None:
        if self.show_reasoning and not self._thinking:
            out.append(Status(THINKING))
        self._thinking = True

    def _remember(self, chunk: LettaUsageStatistics | LettaStopReason) -> None:
        if isinstance(chunk, LettaStopReason):
            self.stop_reason = chunk.stop_reason
        else:
            self.usage = Usage(
                prompt_tokens=chunk.prompt_tokens,
                completion_tokens=chunk.completion_tokens,
                total_tokens=chunk.total_tokens,
                step_count=chunk.step_count,
            )

    def _tool_call(self, chunk: ToolCallMessage, out: list[Event]) -> None:
        deltas = chunk.tool_calls if isinstance(chunk.tool_calls, list) else [chunk.tool_call]
        self._tool_deltas(((d.tool_call_id, d.name, d.arguments) for d in deltas), out)

    def _tool_deltas(self, deltas: Iterable[tuple[str | None, str | None, str | None]], out: list[Event]) -> None:
        self._thinking = False
        for call_id, name, arguments in deltas:
            call = self._call
            if call is None or (call_id is not None and call.call_id is not None and call_id != call.call_id):
                self._close_call(out)
                call = self._call = _OpenCall(call_id, name)
            if call.call_id is None:
                call.call_id = call_id
            if call.name is None and name:
                call.name = name
            if call.name and not call.announced:
                call.announced = True
                if call.call_id:
                    self._tool_names[call.call_id] = call.name
                out.append(Status(using(call.name)))
            if arguments:
                call.arguments.append(arguments)

    def _close_call(self, out: list[Event]) -> None:
        call, self._call = self._call, None
        if call is not None:
            out.append(ToolCall(call.name or "unknown", "".join(call.arguments), call.call_id))

    def _tool_results(self, chunk: ToolReturnMessage) -> list[Event]:
        if chunk.tool_returns:
            return [
                self._result(r.tool_call_id, r.status, r.tool_return if isinstance(r.tool_return, str) else "")
                for r in chunk.tool_returns
            ]
        return [self._result(chunk.tool_call_id, chunk.status, chunk.tool_return)]

    def _result(self, call_id: str | None, status: str | None, returned: str) -> ToolResult:
        name = self._tool_names.get(call_id) if call_id is not None else None
        return ToolResult(name, status == "success", returned[: self.preview_chars], call_id)


def _assistant_text(chunk: AssistantMessage) -> str:
    if isinstance(chunk.content, str):
        return chunk.content
    return "".join(part.text for part in chunk.content)


def _error_text(chunk: LettaErrorMessage) -> str:
    return f"{chunk.message}: {chunk.detail}" if chunk.detail else chunk.message


def _raw_assistant_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def _untagged_kind(chunk: dict[str, Any]) -> str | None:
    """The type of a message without ``message_type`` (optional in the SDK's models), by its own fields."""
    for key, kind in _TELLING_FIELDS:
        if chunk.get(key) is not None:
            return kind
    return None


_TELLING_FIELDS: Final = (
    ("stop_reason", "stop_reason"),
    ("total_tokens", "usage_statistics"),
    ("step_count", "usage_statistics"),
    ("tool_call", "tool_call_message"),
    ("tool_calls", "tool_call_message"),
    ("tool_return", "tool_return_message"),
    ("tool_returns", "tool_return_message"),
    ("error_type", "error_message"),
    ("state", "hidden_reasoning_message"),
    ("reasoning", "reasoning_message"),
)


def _model(chunk: dict[str, Any]) -> object:
    """The SDK model of a raw message, as letta-client's stream would have built it."""
    from letta_client._models import construct_type

    return construct_type(type_=LettaStreamingResponse, value=chunk)


def _text_or_empty(value: object) -> str:
    return value if isinstance(value, str) else ""
