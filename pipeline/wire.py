"""The JSON payload of one SSE ``data:`` line, and back.

This is the one place where events meet cattrs.  The wire keeps the shape of the
original plan: ``{"type": "status", "content": ...}``, ``{"type": "message",
"content": ...}``, ``{"type": "done"}``, ``{"type": "error", "message": ...}``.
Newer types (``reasoning``, ``tool_call``, ``tool_result``) are additions that old
clients ignore; :func:`parse_event` likewise returns ``None`` for a type it does not
know, so a newer server never breaks an older client.
"""

from __future__ import annotations

import json
from typing import Any, Final

import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

from .events import Done, Error, Event, Keepalive, Reasoning, Status, Text, ToolCall, ToolResult


class ProtocolError(ValueError):
    """A ``data:`` payload that is not a valid event of a known type."""


WIRE_TYPES: Final[dict[type[Any], str]] = {
    Status: "status",
    Reasoning: "reasoning",
    Text: "message",
    ToolCall: "tool_call",
    ToolResult: "tool_result",
    Done: "done",
    Error: "error",
}
"""Event class → the ``type`` field on the wire.  Keepalive has no JSON form (it is a comment)."""

_CLASSES: Final = {name: cls for cls, name in WIRE_TYPES.items()}

WireEvent = Status | Reasoning | Text | ToolCall | ToolResult | Done | Error


def strict(kind: type[Any]) -> Any:
    """A structure hook that accepts ``kind`` only: no ``5`` → ``"5"`` or ``"yes"`` → ``True`` coercion."""

    def structure(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return structure


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(omit_if_default=True, forbid_extra_keys=False)
    converter.register_structure_hook(str, strict(str))
    converter.register_structure_hook(int, strict(int))
    converter.register_structure_hook(bool, strict(bool))
    for cls in WIRE_TYPES:  # the resume position travels as the SSE id, never in the JSON
        converter.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, converter, _cattrs_omit_if_default=True, cursor=override(omit=True))
        )
        converter.register_structure_hook(cls, make_dict_structure_fn(cls, converter, cursor=override(omit=True)))
    configure_tagged_union(
        WireEvent,
        converter,
        tag_generator=lambda cls: WIRE_TYPES[cls],
        tag_name="type",
    )
    return converter


converter: Final = _make_converter()


def to_wire(event: Event) -> dict[str, Any]:
    """The JSON object for ``event``; ``type`` always comes first."""
    if isinstance(event, Keepalive):
        raise TypeError("a keepalive has no JSON form; encode it as an SSE comment")
    body: dict[str, Any] = converter.unstructure(event, WireEvent)
    return {"type": body.pop("type"), **body}


def dumps(event: Event) -> str:
    """``event`` as one line of JSON (newlines inside strings are escaped, so it fits one ``data:`` line).

    Non-ASCII text stays readable; a lone surrogate (which UTF-8 cannot carry) falls
    back to ``\\uXXXX`` escapes, so the result always encodes to UTF-8.
    """
    body = to_wire(event)
    try:
        return orjson.dumps(body).decode()  # compact, UTF-8, like json.dumps(ensure_ascii=False), faster
    except TypeError:  # a lone surrogate: orjson refuses it
        return json.dumps(body, separators=(",", ":"))


FAST_TYPES: Final[dict[type[Any], bytes]] = {
    cls: b'event: %s\ndata: {"type":"%s","content":' % (WIRE_TYPES[cls].encode(), WIRE_TYPES[cls].encode())
    for cls in (Text, Reasoning, Status)
}
"""Events whose only field is ``content``: their frame is built without cattrs (the hot path)."""


def fast_frame(event: Text | Reasoning | Status) -> bytes:
    """The SSE frame (``event:`` and ``data:`` lines) of a content-only event, as the encoder would make it."""
    try:
        content = orjson.dumps(event.content)
    except TypeError:  # a lone surrogate
        content = json.dumps(event.content).encode()
    return FAST_TYPES[type(event)] + content + b"}\n\n"


def parse_event(data: str) -> Event | None:
    """The event in a ``data:`` payload, or ``None`` when its type is one we do not know.

    Raises :class:`ProtocolError` when the payload is not a JSON object with a string
    ``type`` or its fields do not fit that type.
    """
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {data[:80]!r}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(f"not an event object: {data[:80]!r}")
    if obj["type"] not in _CLASSES:
        return None
    try:
        event: Event = converter.structure(obj, WireEvent)  # type: ignore[arg-type]
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as exc:
        raise ProtocolError(f"bad {obj['type']!r} event: {exc}") from exc
    return event
