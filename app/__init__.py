"""The letta-stream HTTP service: ``hypercorn app:app -c hypercorn.toml``.

``app`` is the ASGI entry point.  It builds the Quart app from the environment when
the server first calls it (not at import, so tests and tools can import the package
without the service's settings); a bad setting fails the server's startup with the
message naming the variable.
"""

from __future__ import annotations

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Quart

from .factory import create_app
from .settings import SettingsError

__all__ = ["ServiceEntry", "app", "create_app"]


class ServiceEntry:
    """An ASGI callable that builds the service on first use."""

    def __init__(self) -> None:
        self._app: Quart | None = None

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if self._app is None:
            try:
                self._app = create_app()
            except SettingsError as exc:
                if scope["type"] != "lifespan":
                    raise
                await receive()  # lifespan.startup
                message = f"letta-stream is misconfigured: {exc}"
                await send({"type": "lifespan.startup.failed", "message": message})
                return
        await self._app(scope, receive, send)

    async def drain(self) -> None:
        """The server is about to shut down: end open streams resumably and hand their turns off.

        Called by the launcher (:mod:`app.launch`) in each worker when SIGTERM or SIGINT
        arrives, before hypercorn closes connections; returns once the streams ended
        (bounded).  Safe to call more than once, and before the app was built.
        """
        if self._app is not None:
            from .services import EXTENSION

            svc = self._app.extensions[EXTENSION]
            if svc.draining is not None:
                svc.draining.set()


app = ServiceEntry()
