"""``GET /metrics``: stream counters in Prometheus' text format."""

from __future__ import annotations

from quart import Blueprint, Response

from ..services import services

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    svc = services()
    text = svc.metrics.render(detached_turns=len(svc.detached) if svc.detached is not None else 0)
    return Response(text, 200, {"Content-Type": "text/plain; version=0.0.4"})
