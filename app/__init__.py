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


app = ServiceEntry()
