"""``GET /health``: is the service up, and does Letta answer?"""

from __future__ import annotations

from typing import Any

import anyio
from quart import Blueprint

from ..services import services

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
async def health() -> tuple[dict[str, Any], int]:
    """200 when Letta answers within 2 s, 503 otherwise; the body says which."""
    letta: dict[str, Any] = {"url": services().settings.letta_base_url}
    try:
        with anyio.fail_after(2):
            answer = await (services().control or services().client).health()
        letta.update(ok=True, version=answer.version)
    except Exception as exc:  # any failure to answer is "not ok": report it, don't raise
        letta.update(ok=False, error=type(exc).__name__)
    return {"status": "ok" if letta["ok"] else "degraded", "letta": letta}, 200 if letta["ok"] else 503
