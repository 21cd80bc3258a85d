"""``GET /live``: does this process answer?  For a load balancer's health check.

Unlike ``/health`` it does not ask Letta (Letta being down is not a reason to take a
replica out of rotation: every replica shares the same Letta), and unlike ``/metrics`` it
needs no token.  It answers 503 once the process is draining (shutting down), so a balancer
stops sending it new requests before its listeners close.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from ..services import services

blueprint = Blueprint("live", __name__)


@blueprint.get("/live")
async def live() -> tuple[dict[str, Any], int]:
    if services().draining.is_set():
        return {"status": "draining"}, 503
    return {"status": "alive"}, 200
