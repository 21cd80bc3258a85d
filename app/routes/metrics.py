"""``GET /metrics``: stream counters in Prometheus' text format."""

from __future__ import annotations

from quart import Blueprint, Response

from ..services import services

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    svc = services()
    text = svc.metrics.render()
    if svc.detached is not None:
        text += (
            "# HELP letta_stream_detached_turns Turns whose client went away, waiting for it to resume.\n"
            "# TYPE letta_stream_detached_turns gauge\n"
            f"letta_stream_detached_turns {len(svc.detached)}\n"
        )
    return Response(text, 200, {"Content-Type": "text/plain; version=0.0.4"})
