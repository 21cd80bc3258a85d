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

In a resumable turn (Letta's background mode numbers chunks with ``seq_id``) every
event gets a ``cursor``: the last chunk whose events are all out once this event is.
The last event a chunk causes carries that chunk's position; the others (and one
that completes earlier chunks, like a tool call closed by the next chunk) carry the
position before it; the final ``done`` carries the last position.  Resuming after a cursor therefore repeats no text and
loses none.  The turn's first frame carries a position even if it says nothing (a
keepalive): Letta's opening ping (seq 1), or position 0 ("from the start").
"""

from __future__ import annotations

from typing import Final

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
    LettaUsageStatistics,
)

from .cursor import Cursor
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
    ("thinking off"); ``preview_chars`` bounds a tool result's preview;
    ``resumable=True`` puts resume positions on the events; ``position`` is where a
    resumed turn starts (the client already holds it, so no starting keepalive is sent).
    """

    show_reasoning: bool = True
    preview_chars: int = 200
    resumable: bool = False
    run_id: str | None = None
    stop_reason: str | None = None
    usage: Usage | None = None
    position: str | None = None
    _thinking: bool = attrs.field(default=False, init=False)
    _call: _OpenCall | None = attrs.field(default=None, init=False)
    _tool_names: dict[str, str] = attrs.field(factory=dict, init=False)
    _failed: bool = attrs.field(default=False, init=False)
    _finished: bool = attrs.field(default=False, init=False)

    def feed(self, chunk: object) -> list[Event]:
        """The events ``chunk`` means, in order."""
        if self._finished:
            return []
        run_id = getattr(chunk, "run_id", None)
        if isinstance(run_id, str) and run_id:
            self.run_id = run_id
        if not self.resumable:
            return self._map(chunk)
        before = self.position
        first = before is None and self.run_id is not None
        if first:
            before = self.position = str(Cursor(str(self.run_id), 0))
        seq = getattr(chunk, "seq_id", None)
        here = str(Cursor(str(self.run_id), seq)) if type(seq) is int and self.run_id else None
        events = self._map(chunk)
        if here is not None:
            self.position = here
        if first and (not events or not isinstance(events[0], Keepalive)):
            events.insert(0, Keepalive())
        placed: list[Event] = []
        for i, event in enumerate(events):
            if isinstance(event, Keepalive) and not (first and i == 0):
                placed.append(event)  # a ping marks no position (Letta's repeat the last seq)
            elif i == len(events) - 1:  # only once a chunk's last event is out are all of its events out
                placed.append(attrs.evolve(event, cursor=here or before))
            else:
                placed.append(attrs.evolve(event, cursor=before))
        return placed

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

    def finish(self) -> list[Event]:
        """End of the upstream stream: flush, then exactly one terminal event (unless one was sent)."""
        if self._finished:
            return []
        out: list[Event] = []
        self._close_call(out)
        self._finished = True
        if not self._failed:
            out.extend(self._terminal())
        return [attrs.evolve(e, cursor=self.position) for e in out] if self.resumable else out

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
        self._thinking = False
        deltas = chunk.tool_calls if isinstance(chunk.tool_calls, list) else [chunk.tool_call]
        for delta in deltas:
            call_id, name = delta.tool_call_id, delta.name
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
            if delta.arguments:
                call.arguments.append(delta.arguments)

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

    def _result(self, call_id: str, status: str, returned: str) -> ToolResult:
        return ToolResult(self._tool_names.get(call_id), status == "success", returned[: self.preview_chars], call_id)


def _assistant_text(chunk: AssistantMessage) -> str:
    if isinstance(chunk.content, str):
        return chunk.content
    return "".join(part.text for part in chunk.content)


def _error_text(chunk: LettaErrorMessage) -> str:
    return f"{chunk.message}: {chunk.detail}" if chunk.detail else chunk.message
