"""Events → OpenAI chat-completion chunks: the encoder of the OpenAI-compatible endpoint.

The second encoder after :mod:`pipeline.sse`: the same events, written as an OpenAI
``chat.completion.chunk`` stream (``data: {json}\\n\\n`` frames, then ``data: [DONE]``),
so any OpenAI client — OpenWebUI's connections among them — reads an agent turn.

:class:`ChunkEncoder` is a pure state machine (no IO, no clock): it is given one event
at a time and answers with the bytes to send (often one frame, sometimes none).

* answer text (:class:`Text`) → ``delta.content``;
* reasoning (:class:`Reasoning`) → ``delta.reasoning_content`` (OpenWebUI's native
  "Thinking…" block);
* tool use → a line *inside the reasoning stream* ("Using conversation_search...", and
  "<tool> failed." when a tool failed) — never ``delta.tool_calls``, which an OpenAI
  client would try to run itself.  The bare "Thinking..." status says nothing here (the
  reasoning block is its own indicator);
* :class:`Done` → a last chunk with ``finish_reason`` (:func:`finish_reason`) and
  ``usage`` (:func:`usage_body`), then ``[DONE]``;
* :class:`Error` → an OpenAI error object ``{"error": {message, type, code}}`` (how
  OpenAI reports a failure mid-stream), then ``[DONE]``;
* :class:`Keepalive` → an SSE comment.

The first chunk's delta carries ``"role": "assistant"``.  After the terminal event the
encoder says nothing more.  :func:`completion` builds the non-streaming
``chat.completion`` object from a whole turn's events with the same mappings.
:func:`encode_openai` is the anyio stage around the encoder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, Final

import anyio
import attrs

from .errors import ConsumerStalled
from .events import Done, Error, Event, Keepalive, Reasoning, Status, Text, ToolResult, Usage
from .letta_map import THINKING
from .sse import KEEPALIVE_FRAME
from .streams import Receive, Send

DONE_FRAME: Final = b"data: [DONE]\n\n"

LENGTH_STOP_REASONS: Final = frozenset({"max_steps", "max_tokens_exceeded", "context_window_overflow_in_system_prompt"})
"""Letta stop reasons that mean "cut short by a limit": OpenAI's ``length``."""


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's ``finish_reason`` for a Letta stop reason: ``length`` for a limit, else ``stop``.

    Never ``tool_calls``: the agent's tools ran inside Letta, and a client told
    otherwise would try to run them.
    """
    return "length" if stop_reason in LENGTH_STOP_REASONS else "stop"


def usage_body(usage: Usage | None) -> dict[str, int]:
    """OpenAI's ``usage`` object; unknown counts are 0, the total defaults to their sum."""
    prompt = (usage.prompt_tokens if usage else None) or 0
    completion_tokens = (usage.completion_tokens if usage else None) or 0
    total = (usage.total_tokens if usage else None) or prompt + completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": total}


def error_body(error: Error) -> dict[str, Any]:
    """An OpenAI error object for a turn that failed."""
    return {"error": {"message": error.message, "type": "server_error", "code": error.code, "param": None}}


def tool_line(event: Status | ToolResult) -> str | None:
    """The reasoning line that shows tool use, or ``None`` when the event shows nothing."""
    if isinstance(event, Status):
        return None if event.content == THINKING else event.content
    if event.ok:
        return None
    return f"{event.name or 'A tool'} failed."


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


@attrs.define
class ReasoningLayout:
    """What an event adds to the reasoning stream: reasoning text as it is, tool use as a paragraph of its own."""

    _sent: bool = attrs.field(default=False, init=False)
    _at_line_start: bool = attrs.field(default=True, init=False)

    def text(self, event: Event) -> str:
        """The reasoning text ``event`` adds (``""``: none)."""
        if isinstance(event, Reasoning):
            piece = event.content
        elif isinstance(event, (Status, ToolResult)):
            line = tool_line(event)
            if line is None:
                return ""
            gap = "\n\n" if self._sent and not self._at_line_start else ""
            piece = f"{gap}{line}\n\n"
        else:
            return ""
        if piece:
            self._sent = True
            self._at_line_start = piece.endswith("\n")
        return piece


@attrs.define
class ChunkEncoder:
    """Encodes one turn's events as chunks of completion ``id`` of ``model``, made at ``created``."""

    id: str
    model: str
    created: int
    _role_sent: bool = attrs.field(default=False, init=False)
    _layout: ReasoningLayout = attrs.field(factory=ReasoningLayout, init=False)
    finished: bool = attrs.field(default=False, init=False)
    """The terminal frames went out: nothing more will be encoded."""
    failed: bool = attrs.field(default=False, init=False)
    """The turn ended with an error."""

    def encode(self, event: Event) -> bytes:
        """The bytes ``event`` means on the wire (``b""``: nothing)."""
        if self.finished:
            return b""
        if isinstance(event, Keepalive):
            return KEEPALIVE_FRAME
        if isinstance(event, Text):
            return self._delta({"content": event.content}) if event.content else b""
        if isinstance(event, Done):
            self.finished = True
            last = self._chunk({}, finish_reason(event.stop_reason))
            last["usage"] = usage_body(event.usage)
            return _frame(last) + DONE_FRAME
        if isinstance(event, Error):
            self.finished = self.failed = True
            return _frame(error_body(event)) + DONE_FRAME
        reasoning = self._layout.text(event)  # reasoning, and tool use shown as reasoning; a ToolCall: nothing
        return self._delta({"reasoning_content": reasoning}) if reasoning else b""

    def close(self) -> bytes:
        """The end of the events: if no terminal event came, an ``incomplete`` error and ``[DONE]``."""
        if self.finished:
            return b""
        return self.encode(Error("The agent's answer ended before the turn finished.", "incomplete"))

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _frame(self._chunk(delta, None))

    def _chunk(self, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }


def completion(events: Iterable[Event], *, id: str, model: str, created: int) -> dict[str, Any] | Error:
    """The ``chat.completion`` object of a whole turn, or the turn's :class:`Error` if it failed.

    ``message.reasoning_content`` (reasoning and tool lines, as the stream shows them)
    is present only when there is some.
    """
    layout = ReasoningLayout()
    content: list[str] = []
    reasoning: list[str] = []
    done: Done | None = None
    for event in events:
        if isinstance(event, Error):
            return event
        if isinstance(event, Text):
            content.append(event.content)
        elif isinstance(event, Done):
            done = event
        else:
            reasoning.append(layout.text(event))
    reasoning_text = "".join(reasoning)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if reasoning_text:
        message["reasoning_content"] = reasoning_text
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(done.stop_reason if done else None)}
        ],
        "usage": usage_body(done.usage if done else None),
    }


async def encode_openai(recv: Receive, send: Send, *, encoder: ChunkEncoder, send_timeout: float | None = None) -> None:
    """Encode every event of ``recv`` as OpenAI chunk frames; close with ``[DONE]``.  Closes both streams.

    Reads ``recv`` to its end (events after the terminal one encode to nothing), then
    sends :meth:`ChunkEncoder.close`'s frames if the turn never ended.  With
    ``send_timeout``, a consumer that takes no frame for that long raises
    :class:`ConsumerStalled`, which ends the whole pipeline (and so cancels the source).
    """
    limit = math.inf if send_timeout is None else send_timeout
    with send, recv:
        async for event in recv:
            await _send(send, encoder.encode(event), limit)
        await _send(send, encoder.close(), limit)


async def _send(send: Send, frame: bytes, limit: float) -> None:
    if not frame:
        return
    with anyio.move_on_after(limit) as waited:
        await send.send(frame)
    if waited.cancelled_caught:
        raise ConsumerStalled(f"no frame taken for {limit} s")
