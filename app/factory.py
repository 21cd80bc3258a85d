"""Building the Quart app: blueprints, JSON errors, and the Letta client's lifetime."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import anyio
from letta_client import AsyncLetta
from quart import Quart
from werkzeug.exceptions import HTTPException

from .agents import AgentRegistry
from .auth import install_auth
from .cancels import RunCanceller
from .connection import StreamingConnection
from .errors import ApiError
from .request_ids import install_request_ids
from .routes import agents, chat, health, metrics
from .services import EXTENSION, Services
from .settings import Settings, settings_from_env
from .shutdown import drain_before_server_signals
from .upstream import make_client

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, client: AsyncLetta | None = None) -> Quart:
    """The service.  ``client`` replaces the Letta client (tests); otherwise one is made from settings."""
    settings = settings if settings is not None else settings_from_env()
    app = Quart(__name__, static_folder=None)
    app.asgi_http_class = StreamingConnection
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    owns_client = client is None
    letta = client if client is not None else make_client(settings, max_connections=64)
    control = (
        client if client is not None else make_client(settings, max_connections=settings.letta_control_connections)
    )
    shards = settings.letta_pool_shards
    per_shard = -(-settings.letta_max_connections // shards)
    streams = (
        [client] if client is not None else [make_client(settings, max_connections=per_shard) for _ in range(shards)]
    )
    registry = AgentRegistry(letta, settings.model, settings.embedding)
    canceller = RunCanceller(control)
    svc = Services(settings, letta, registry, control=control, streams=streams, canceller=canceller)
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
    async def load_agents() -> None:
        try:
            count = await svc.registry.rebuild()
            log.info("agent index rebuilt from Letta: %d agents", count)
        except Exception as exc:  # Letta may start later: the index fills on demand
            log.warning("could not rebuild the agent index from Letta: %r", exc)

    @app.after_serving
    async def close_client() -> None:
        if owns_client:
            for owned in (letta, control, *streams):
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
