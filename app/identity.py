"""Who the student is, on the OpenAI-compatible endpoint: from the user headers OpenWebUI forwards.

OpenWebUI (``ENABLE_FORWARD_USER_INFO_HEADERS=true``) names the signed-in user on every
call to a connection, in one of two ways (``open_webui/utils/headers.py``, 0.12.4):

* with ``FORWARD_USER_INFO_HEADER_JWT_SECRET`` set, one HS256 JWT in
  ``X-OpenWebUI-User-Jwt`` with the claims ``sub`` (the user id), ``name``, ``email``,
  ``role``, ``iss`` = ``open-webui``, ``iat`` and ``exp`` (300 s after minting);
* otherwise plain headers: ``X-OpenWebUI-User-Id``, ``X-OpenWebUI-User-Name``
  (URL-quoted), ``-Email`` and ``-Role``.

When the service has the same secret (``OPENWEBUI_JWT_SECRET``), only a valid signed
header names the student: a missing, tampered, expired or foreign token is refused (401)
and plain headers are ignored.  Without a secret the plain headers are trusted, because
the bearer token already proved the caller is OpenWebUI.  No user at all is a 400.
"""

from __future__ import annotations

from typing import Final, Protocol
from urllib.parse import unquote

import attrs
import jwt

from .auth import Unauthorized
from .bodies import MAX_ID_CHARS
from .errors import InvalidRequest

JWT_HEADER: Final = "X-OpenWebUI-User-Jwt"
ID_HEADER: Final = "X-OpenWebUI-User-Id"
NAME_HEADER: Final = "X-OpenWebUI-User-Name"
ISSUER: Final = "open-webui"
LEEWAY_SECONDS: Final = 5.0
"""Clock skew tolerated between OpenWebUI and the service when checking ``exp``/``iat``."""


class Headers(Protocol):
    """A request's headers, looked up without regard to case (werkzeug's ``Headers``)."""

    def get(self, key: str) -> str | None: ...


@attrs.frozen
class Student:
    """An OpenWebUI user: ``user_id`` is their OpenWebUI id (their agents are tagged with it)."""

    user_id: str
    name: str | None = None


def _user_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{where} names no user", field=where)
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequest(f"{where} is longer than {MAX_ID_CHARS} characters", field=where)
    return value


def _name(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_ID_CHARS]


def from_jwt(token: str | None, secret: str) -> Student:
    """The student a signed ``X-OpenWebUI-User-Jwt`` names; :class:`Unauthorized` unless it is valid now."""
    if not token:
        raise Unauthorized(f"the signed user header {JWT_HEADER} is required")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["sub", "exp", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized(f"the signed user header {JWT_HEADER} has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"the signed user header {JWT_HEADER} is not valid") from exc
    return Student(_user_id(claims.get("sub"), JWT_HEADER), _name(claims.get("name")))


def student_from_headers(headers: Headers, jwt_secret: str | None) -> Student:
    """The student a request from OpenWebUI is for (see the module's docstring for the rules)."""
    if jwt_secret:
        return from_jwt(headers.get(JWT_HEADER), jwt_secret)
    user_id = headers.get(ID_HEADER)
    if user_id is None:
        raise InvalidRequest(
            f"no user: OpenWebUI must forward user headers ({ID_HEADER}; ENABLE_FORWARD_USER_INFO_HEADERS=true)",
            field=ID_HEADER,
        )
    name = headers.get(NAME_HEADER)
    return Student(_user_id(user_id, ID_HEADER), _name(unquote(name) if name else None))
