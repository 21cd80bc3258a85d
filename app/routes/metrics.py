"""``GET /metrics``: stream counters in Prometheus' text format."""

from __future__ import annotations

from quart import Blueprint, Response

from ..services import services

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    return Response(services().metrics.render(), 200, {"Content-Type": "text/plain; version=0.0.4"})
