"""The service's settings, read once from environment variables.

Each field names its variable; values are structured with cattrs, and a bad value
raises :class:`SettingsError` naming the variable rather than starting half-configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

DEFAULT_AGENTS_FILE = str(Path(__file__).resolve().parents[1] / "agents.toml")
"""The agent types shipped at the repository's root."""


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use."""


LETTA_HTTP_KINDS = ("httptools", "aiohttp", "httpx")


def _env(name: str, default: Any) -> Any:
    return attrs.field(default=default, metadata={"env": name})


@attrs.frozen
class Settings:
    """Everything configurable, with defaults for a local stack."""

    letta_base_url: str = _env("LETTA_BASE_URL", "http://127.0.0.1:8283")
    letta_api_key: str | None = _env("LETTA_API_KEY", None)
    letta_timeout: float = _env("LETTA_TIMEOUT_SECONDS", 300.0)
    model: str = _env("LETTA_MODEL", "openai/gpt-4o-mini")
    embedding: str = _env("LETTA_EMBEDDING", "openai/text-embedding-3-small")
    agents_file: str = _env("AGENTS_FILE", DEFAULT_AGENTS_FILE)
    """The agent types students can pick (:mod:`app.agent_types`), read and checked at startup."""
    throttle_window: float = _env("STREAM_THROTTLE_SECONDS", 0.05)
    throttle_leading: bool = _env("STREAM_THROTTLE_LEADING", True)
    """Send the first text after a pause at once, then at most one frame per window (off: every
    frame waits its window, which adds the window to the first text)."""
    keepalive_interval: float = _env("STREAM_KEEPALIVE_SECONDS", 15.0)
    cancel_timeout: float = _env("LETTA_CANCEL_TIMEOUT_SECONDS", 30.0)
    """How long a stream closed before its end keeps trying to cancel its run (a burst of disconnects queues them)."""
    letta_max_connections: int = _env("LETTA_MAX_CONNECTIONS", 4096)
    """Open streams the service may hold at once (each holds one connection to Letta)."""
    letta_pool_shards: int = _env("LETTA_POOL_SHARDS", 8)
    letta_control_connections: int = _env("LETTA_CONTROL_CONNECTIONS", 256)
    """Connections of the separate client that cancels runs and answers health checks."""
    letta_http: str = _env("LETTA_HTTP", "httptools")
    """The HTTP transport under the Letta clients: ``httptools`` (asyncio protocols that hand a stream's bytes
    to the pipeline from the loop's callbacks, ``app/letta_protocol.py``), ``aiohttp`` or ``httpx``
    (``app/letta_http.py``)."""
    send_timeout: float = _env("STREAM_SEND_TIMEOUT_SECONDS", 30.0)
    resume: bool = _env("STREAM_RESUME", True)
    """Keep each turn's frames in its log so a dropped stream can resume (off: no log, and a
    client that leaves has its run cancelled at once)."""
    resume_grace: float = _env("STREAM_RESUME_GRACE_SECONDS", 30.0)
    """How long a turn whose client went away keeps running, waiting for it to resume."""
    redis_url: str | None = _env("REDIS_URL", None)
    """Where turn state is shared by workers and replicas; unset: in this process only."""
    redis_prefix: str = _env("REDIS_KEY_PREFIX", "letta-stream:")
    """Every Redis key of the service starts with this (several deployments may share one Redis)."""
    turn_lease: float = _env("TURN_LEASE_SECONDS", 10.0)
    """How long a process may be silent before its turns count as orphaned (taken over by a resume)."""
    log_keep: float = _env("TURN_LOG_KEEP_SECONDS", 600.0)
    """How long a turn's log is kept after the turn ended (a late resume replays it)."""
    drain_seconds: float = _env("DRAIN_SECONDS", 8.0)
    """On shutdown, how long turns still running here may take before they are handed off."""
    gc_young_threshold: int = _env("GC_YOUNG_THRESHOLD", 50_000)
    """Net allocations between young garbage collections once the app has started (0: CPython's 700, and
    nothing frozen).  See ``app/collector.py``."""
    max_message_chars: int = _env("MAX_MESSAGE_CHARS", 20_000)
    max_body_bytes: int = _env("MAX_BODY_BYTES", 32 * 1024 * 1024)
    """Largest request body (413 beyond): room for ``MAX_IMAGES`` pictures of ``MAX_IMAGE_BYTES`` in base64."""
    max_images: int = _env("MAX_IMAGES", 4)
    """Pictures one message may carry."""
    max_image_bytes: int = _env("MAX_IMAGE_BYTES", 5 * 1024 * 1024)
    """Largest picture, decoded."""
    service_token: str | None = _env("SERVICE_TOKEN", None)
    """Bearer token every endpoint but /health requires; ``None`` leaves the service open."""
    openwebui_jwt_secret: str | None = _env("OPENWEBUI_JWT_SECRET", None)
    """OpenWebUI's ``FORWARD_USER_INFO_HEADER_JWT_SECRET``: when set, ``/v1/*`` knows the student only from
    the signed ``X-OpenWebUI-User-Jwt`` header (at least 32 characters: HS256's minimum key length)."""


attrs.resolve_types(Settings)  # field types are strings under `from __future__ import annotations`


def _bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


_converter = cattrs.Converter()
_converter.register_structure_hook(bool, _bool)


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: the process environment); unset variables keep defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in attrs.fields(Settings):
        name = field.metadata["env"]
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[field.name] = _converter.structure(raw, field.type)  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{name}={raw!r}: {exc}") from exc
    settings = Settings(**values)
    if settings.openwebui_jwt_secret is not None and len(settings.openwebui_jwt_secret.encode()) < 32:
        raise SettingsError("OPENWEBUI_JWT_SECRET is shorter than 32 bytes (HS256 needs a longer key)")
    if settings.letta_http not in LETTA_HTTP_KINDS:
        raise SettingsError(f"LETTA_HTTP={settings.letta_http!r}: use {' or '.join(map(repr, LETTA_HTTP_KINDS))}")
    auth = environ.get("SERVICE_AUTH", "on").strip().lower()
    if auth not in {"on", "off"}:
        raise SettingsError(f"SERVICE_AUTH={auth!r}: use 'on' or 'off'")
    if auth == "off":
        return attrs.evolve(settings, service_token=None)
    if not settings.service_token:
        raise SettingsError(
            "SERVICE_TOKEN is not set: set it (the pipe's SERVICE_TOKEN valve must match), "
            "or set SERVICE_AUTH=off to run without authentication"
        )
    return settings
