"""Request and response bodies, and turning JSON into them with a clear error.

Bodies are frozen attrs classes.  :func:`parse_body` structures JSON with cattrs,
refusing coercions (``5`` is not a string) and reporting the first bad field as
:class:`~app.errors.InvalidRequest` with ``field`` set.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, IterableValidationError, IterableValidationNote

from pipeline.content import Image
from pipeline.wire import strict

from .errors import InvalidRequest

T = TypeVar("T")

MAX_ID_CHARS = 256


class FieldError(ValueError):
    """A field's value is of the right type but not acceptable."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _identifier(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not value.strip():
        raise FieldError(attribute.name, f"{attribute.name} must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise FieldError(attribute.name, f"{attribute.name} is longer than {MAX_ID_CHARS} characters")


def _message(request: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip() and not getattr(request, "images", None):  # a picture alone is a message
        raise FieldError(attribute.name, "message must not be empty")


@attrs.frozen
class CreateAgent:
    user_id: str = attrs.field(validator=_identifier)
    agent_type: str = attrs.field(default="tutor", validator=_identifier)
    user_name: str | None = attrs.field(default=None, validator=_identifier)


@attrs.frozen
class ChatRequest:
    agent_id: str = attrs.field(validator=_identifier)
    message: str = attrs.field(validator=_message)
    chat_id: str | None = attrs.field(default=None, validator=_identifier)
    """OpenWebUI's chat: one Letta conversation per chat; none → the agent's default history."""
    chat_title: str | None = None
    user_id: str | None = attrs.field(default=None, validator=_identifier)
    user_message_id: str | None = attrs.field(default=None, validator=_identifier)
    """OpenWebUI's id of this user message (kept as the Letta message's ``otid``; the same id again = regenerate)."""
    parent_message_id: str | None = attrs.field(default=None, validator=_identifier)
    """OpenWebUI's parent of this user message (recorded for edits; see docs/protocol.md)."""
    images: list[Image] = attrs.Factory(list)
    """Pictures pasted with the message (checked by :func:`app.images.checked_images`)."""


@attrs.frozen
class StreamRequest(ChatRequest):
    enable_thinking: bool = True
    stream_tokens: bool = True


@attrs.frozen
class CancelRequest:
    """The stop button: stop ``agent_id``'s turn (``run_id`` if known, else whatever it runs)."""

    agent_id: str = attrs.field(validator=_identifier)
    user_id: str | None = attrs.field(default=None, validator=_identifier)
    run_id: str | None = attrs.field(default=None, validator=_identifier)


@attrs.frozen
class AgentInfo:
    agent_id: str
    user_id: str
    agent_type: str
    name: str
    created_at: str | None = None


@attrs.frozen
class ToolUse:
    name: str
    arguments: str
    ok: bool | None = None


@attrs.frozen
class ChatReply:
    agent_id: str
    response: str
    reasoning: str = ""
    tools: list[ToolUse] = attrs.Factory(list)
    stop_reason: str | None = None
    run_id: str | None = None


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=False)
    for kind in (str, int, bool):
        converter.register_structure_hook(kind, strict(kind))
    images = converter.get_structure_hook(list[Image])

    def image_list(value: Any, kind: Any) -> list[Image]:
        if not isinstance(value, list):  # cattrs would iterate a string or an object
            raise TypeError("must be a list of {media_type, data} objects")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise FieldError(f"[{index}]", f"images[{index}] must be a {{media_type, data}} object")
        found: list[Image] = images(value, kind)
        return found

    converter.register_structure_hook_func(lambda kind: kind == list[Image], image_list)
    return converter


converter = _make_converter()


def _problems(exc: BaseException, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(exc, FieldError):
        return [(prefix + exc.field, str(exc))]
    if isinstance(exc, ClassValidationError):
        found: list[tuple[str, str]] = []
        for sub in exc.exceptions:
            notes = [n for n in getattr(sub, "__notes__", []) if isinstance(n, AttributeValidationNote)]
            name = prefix + notes[0].name if notes else prefix
            if isinstance(sub, KeyError):
                found.append((name, f"{name} is required"))
            elif isinstance(sub, IterableValidationError):
                found += _problems(sub, name)
            elif isinstance(sub, FieldError) and sub.field.startswith("["):  # an item of a list field
                found.append((name + sub.field, str(sub)))
            elif isinstance(sub, ClassValidationError | FieldError):
                found += _problems(sub, f"{name}." if notes else prefix)
            else:
                found.append((name, f"{name}: {sub}"))
        return found
    if isinstance(exc, IterableValidationError):  # a list's items: name each by its index, images[2].data
        items: list[tuple[str, str]] = []
        for sub in exc.exceptions:
            indexes = [n.index for n in getattr(sub, "__notes__", []) if isinstance(n, IterableValidationNote)]
            at = f"{prefix}[{indexes[0]}]" if indexes else prefix
            where = at if isinstance(sub, ClassValidationError) else prefix  # an item of another type: the list
            items += (
                _problems(sub, f"{where}.") if isinstance(sub, ClassValidationError) else [(where, f"{where}: {sub}")]
            )
        return items
    return [(prefix.rstrip("."), str(exc))]


def parse_body(data: Any, cls: type[T]) -> T:
    """``data`` (decoded JSON) as ``cls``, or :class:`InvalidRequest` naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", field=None)
    try:
        return converter.structure(data, cls)
    except (ClassValidationError, FieldError) as exc:
        problems = _problems(exc) or [("", str(exc))]
        field, message = problems[0]
        raise InvalidRequest(message, field=field or None, problems=[m for _, m in problems]) from exc


def to_json(value: Any) -> Any:
    """A body value as JSON-ready data."""
    return converter.unstructure(value)
