"""The OpenAI-compatible API's vocabulary: its models, its request body, its error objects.

* A *model* is an agent type: one model per type in the agent-types file
  (:mod:`app.agent_types`), its id the type's id (``tutor``), its name the type's name.
* A request is an OpenAI chat-completion body; only ``model``, ``messages`` and
  ``stream`` matter (other fields are accepted and ignored: the agent has its own model
  and settings).  The agent keeps the conversation in its own memory, so only the
  *last user message* is sent to it; the history OpenWebUI sends along is not.
* Errors are OpenAI error objects, ``{"error": {"message", "type", "code", "param"}}``,
  with the service's error code as ``code`` and the field at fault as ``param``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .agent_types import AgentTypes
from .bodies import FieldError
from .errors import ApiError, NotFound

OWNED_BY: Final = "letta-stream"
STARTED: Final = int(time.time())
"""The ``created`` of every model: when this process started."""


def model_list(types: AgentTypes) -> dict[str, Any]:
    """``GET /v1/models``: one model per agent type, named as students see it."""
    return {
        "object": "list",
        "data": [
            {"id": t.id, "object": "model", "created": STARTED, "owned_by": OWNED_BY, "name": t.name}
            for t in types.values()
        ],
    }


class ModelNotFound(NotFound):
    code = "model_not_found"


def model_type(types: AgentTypes, model: str) -> str:
    """The agent type a model id names; 404 :class:`ModelNotFound` for none."""
    if model not in types:
        known = ", ".join(types)
        raise ModelNotFound(f"the model {model!r} does not exist (models: {known})", field="model")
    return model


def _model(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "model must not be empty")


def _messages(_: Any, attribute: attrs.Attribute[Any], value: list[dict[str, Any]]) -> None:
    if not value:
        raise FieldError(attribute.name, "messages must not be empty")


@attrs.frozen
class CompletionRequest:
    """The fields of a chat-completion request this service reads."""

    model: str = attrs.field(validator=_model)
    messages: list[dict[str, Any]] = attrs.field(validator=_messages)
    stream: bool = False


def message_text(message: Mapping[str, Any]) -> str:
    """A message's text: its ``content`` string, or the ``text`` parts of a content list (pictures: app.images)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last ``user`` message (``""`` if there is none)."""
    return next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")


ERROR_TYPES: Final = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error"}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def error_object(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": error_type(status), "code": code, "param": param}}


def api_error_object(exc: ApiError) -> dict[str, Any]:
    """One of the service's errors as an OpenAI error body (``field`` becomes ``param``)."""
    field = exc.extra.get("field")
    return error_object(exc.status, exc.code, exc.message, field if isinstance(field, str) else None)
