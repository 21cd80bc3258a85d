"""The values that flow between stages.

Every event is a frozen, slotted attrs value: stages pass them along, merge text
deltas into new values, and never mutate one in place.  Nothing here knows about
Letta's SDK types, SSE or HTTP: :mod:`pipeline.letta_map` produces these events
and :mod:`pipeline.wire` turns them into JSON at the edge.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs


def _cursor() -> str | None:
    """Every event may carry a resume position (see :mod:`pipeline.cursor`).

    It is metadata, not part of the value: it is left out of equality and of the JSON,
    and the SSE encoder sends it as the frame's ``id:``.
    """
    return attrs.field(default=None, kw_only=True, eq=False, repr=False)  # type: ignore[no-any-return]


@attrs.frozen
class Status:
    """A short line for the user about what the agent is doing ("Thinking...", "Using x...")."""

    content: str
    cursor: str | None = _cursor()


@attrs.frozen
class Reasoning:
    """A delta of the agent's visible reasoning.  Consecutive deltas concatenate."""

    content: str
    cursor: str | None = _cursor()


@attrs.frozen
class Text:
    """A delta of the assistant's answer.  Consecutive deltas concatenate."""

    content: str
    cursor: str | None = _cursor()


@attrs.frozen
class ToolCall:
    """The agent called a tool; ``arguments`` is the complete JSON text of the call."""

    name: str
    arguments: str = ""
    call_id: str | None = None
    cursor: str | None = _cursor()


@attrs.frozen
class ToolResult:
    """A tool finished.  ``preview`` is a bounded prefix of what it returned."""

    name: str | None
    ok: bool
    preview: str = ""
    call_id: str | None = None
    cursor: str | None = _cursor()


@attrs.frozen
class Usage:
    """Token counts Letta reported for the turn (any may be unknown)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    step_count: int | None = None


@attrs.frozen
class Done:
    """The turn ended normally.  Always the last event of a successful stream."""

    stop_reason: str | None = None
    usage: Usage | None = None
    run_id: str | None = None
    cursor: str | None = _cursor()


@attrs.frozen
class Error:
    """The turn failed.  The last event of a failed stream; no :class:`Done` follows."""

    message: str
    code: str = "error"
    cursor: str | None = _cursor()


@attrs.frozen
class Keepalive:
    """Nothing to say, but the stream is alive.  Encoded as an SSE comment.

    The first one of a resumable turn carries the turn's starting position (so a
    stream dropped before any answer can still resume); others carry none.
    """

    cursor: str | None = _cursor()


Event: TypeAlias = Status | Reasoning | Text | ToolCall | ToolResult | Done | Error | Keepalive
"""Everything a stage may send downstream."""

DELTA_TYPES = (Reasoning, Text)
"""Events whose consecutive values concatenate (the throttle merges these)."""

TERMINAL_TYPES = (Done, Error)
"""Events after which a stream carries nothing more."""
