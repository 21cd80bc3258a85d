"""Bearer-token authentication between the pipe and the service.

The token is a service credential: only OpenWebUI's pipe (and operators) hold it.
Students never reach the service directly; the pipe passes the OpenWebUI user id,
which the chat endpoints check against the agent's owner.
"""

from __future__ import annotations

import hmac

from quart import Quart, request

from .errors import ApiError

OPEN_PATHS = frozenset({"/health", "/live"})


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


def install_auth(app: Quart, token: str | None) -> None:
    """Refuse every request but ``OPEN_PATHS`` without ``Authorization: Bearer <token>`` (when a token is set)."""
    if not token:
        return
    expected = f"Bearer {token}".encode()

    @app.before_request
    async def check() -> None:
        if request.path in OPEN_PATHS:
            return
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("a valid 'Authorization: Bearer <token>' header is required")
