"""A request id per request: taken from ``X-Request-Id`` when it is sane, made up otherwise, echoed back.

It ties the service's log lines for one stream together (and to a proxy's logs).  Every
answer also names the process that served it, ``X-Served-By: <host>:<pid>`` — with several
workers and replicas behind a balancer, the one whose log has the rest of the story.
"""

from __future__ import annotations

import os
import re
import socket
import uuid

from quart import Quart, Response, g, request

_SANE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def served_by() -> str:
    """This process, as ``X-Served-By`` names it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def install_request_ids(app: Quart) -> None:
    @app.before_request
    async def assign() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _SANE.match(given) else uuid.uuid4().hex[:16]

    @app.after_request
    async def echo(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-Id"] = request_id
        response.headers["X-Served-By"] = served_by()
        return response
