"""Building the Quart app: blueprints, JSON errors, and the Letta client's lifetime."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
from letta_client import AsyncLetta
from quart import Quart
from werkzeug.exceptions import HTTPException

from .agents import AgentRegistry
from .auth import install_auth
from .cancels import RunCanceller
from .connection import StreamingConnection
from .detached import DetachedTurns
from .errors import ApiError
from .request_ids import install_request_ids
from .routes import agents, chat, health, metrics
from .services import EXTENSION, Services
from .settings import Settings, settings_from_env
from .shutdown import drain_before_server_signals
from .upstream import LettaClients, make_clients

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, client: AsyncLetta | None = None) -> Quart:
    """The service.  ``client`` replaces the Letta client (tests); otherwise one is made from settings."""
    settings = settings if settings is not None else settings_from_env()
    app = Quart(__name__, static_folder=None)
    app.asgi_http_class = StreamingConnection
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    clients = make_clients(settings) if client is None else LettaClients.single(client)
    registry = AgentRegistry(clients.crud, settings.model, settings.embedding)
    canceller = RunCanceller(clients.control)
    svc = Services(
        settings,
        clients.crud,
        registry,
        control=clients.control,
        streams=clients.streams,
        canceller=canceller,
        resume=settings.resume,
    )
    detached = svc.detached = DetachedTurns(svc.guard, canceller, settings.resume_grace)
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 15  # time to send the cancels of streams cut at shutdown
    app.extensions[EXTENSION] = svc
    for module in (health, metrics, agents, chat):
        app.register_blueprint(module.blueprint)
    install_request_ids(app)
    install_auth(app, settings.service_token)

    @app.before_serving
    async def prepare_draining() -> None:
        draining = svc.draining = anyio.Event()
        drain_before_server_signals(draining.set)

    @app.before_serving
    async def start_canceller() -> None:
        shutdown = cast(asyncio.Event, app.shutdown_event)  # Quart types it as a Protocol without wait()
        app.add_background_task(canceller.run, shutdown.wait)

    @app.before_serving
    async def start_detached_turns() -> None:
        shutdown = cast(asyncio.Event, app.shutdown_event)
        draining = svc.draining
        assert draining is not None

        async def stopping() -> None:  # whichever comes first: a drain (SIGTERM) or the shutdown
            async with anyio.create_task_group() as tg:
                for wait in (draining.wait, shutdown.wait):
                    tg.start_soon(_then_cancel, wait, tg.cancel_scope)

        app.add_background_task(detached.run, stopping)

    @app.before_serving
    async def load_agents() -> None:
        try:
            count = await svc.registry.rebuild()
            log.info("agent index rebuilt from Letta: %d agents", count)
        except Exception as exc:  # Letta may start later: the index fills on demand
            log.warning("could not rebuild the agent index from Letta: %r", exc)

    @app.after_serving
    async def close_client() -> None:
        if client is None:  # ours to close; a given client belongs to the caller
            for owned in clients.owned():
                await owned.close()

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> tuple[dict[str, Any], int, dict[str, str]]:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return exc.body(), exc.status, headers

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        return {"error": code, "message": exc.description or exc.name}, exc.code or 500

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> tuple[dict[str, Any], int]:
        log.exception("unhandled error")
        return {"error": "internal_error", "message": "the service failed; see its log"}, 500

    return app


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: anyio.CancelScope) -> None:
    await wait()
    scope.cancel()
