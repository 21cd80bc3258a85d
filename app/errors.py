"""Errors the service answers with, each a JSON body and a status code."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with an HTTP status and a machine-readable ``error`` code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class InvalidRequest(ApiError):
    """The request body or query is wrong; ``field`` names what to fix."""

    status = 400
    code = "invalid_request"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UpstreamError(ApiError):
    """Letta answered, but with an error we cannot pass on as the client's fault."""

    status = 502
    code = "upstream_error"


class AgentTypeMisconfigured(ApiError):
    """Letta refused to create an agent of a type as the agent-types file defines it (e.g. a tool
    it does not have): the operator's mistake, not the client's, and not Letta failing."""

    status = 500
    code = "agent_type_misconfigured"


class UpstreamUnavailable(ApiError):
    """Letta could not be reached or timed out."""

    status = 503
    code = "upstream_unavailable"


class NotResumable(ApiError):
    """A ``Last-Event-ID`` of a turn that cannot be read again (not resumable, or too old)."""

    status = 410
    code = "not_resumable"


class TurnInProgress(ApiError):
    """The agent is answering another message.  Letta interleaves concurrent messages to one
    agent, so a second one is refused rather than queued: the student sees "still answering"
    at once, and nothing waits on a turn it may never get."""

    status = 409
    code = "turn_in_progress"
