"""``GET /metrics``: the service's metrics in Prometheus' text format (every worker's, summed)."""

from __future__ import annotations

from quart import Blueprint, Response

from ..services import services

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    body, content_type = services().metrics.render()
    return Response(body, 200, {"Content-Type": content_type})
