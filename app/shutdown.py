"""What a request meets while the server shuts down.

Shutting down itself is the launcher's (:mod:`app.launch`): on SIGTERM/SIGINT each worker
first awaits :meth:`app.ServiceEntry.drain`, which ends open streams resumably and hands
their turns off, and only then lets hypercorn close its connections.  Meanwhile new
streams are refused with :class:`ShuttingDown` (503), so the client tries again — through
the balancer, on a replica that is not shutting down.
"""

from __future__ import annotations

from .errors import ApiError


class ShuttingDown(ApiError):
    status = 503
    code = "shutting_down"
