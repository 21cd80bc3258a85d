"""Building the Quart app: blueprints, JSON errors, and the Letta client's lifetime."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import anyio
from letta_client import AsyncLetta
from quart import Quart
from werkzeug.exceptions import HTTPException

from pipeline.halt import Halt

from .agent_types import AgentTypes, load_agent_types
from .agents import AgentRegistry
from .auth import install_auth
from .cancels import RunCanceller
from .collector import tune
from .connection import StreamingConnection
from .conversations import ConversationIndex
from .errors import ApiError
from .metrics import StreamMetrics
from .request_body import LeanRequest
from .request_ids import install_request_ids
from .routes import agents, chat, health, live, metrics, openai
from .services import EXTENSION, Services
from .settings import Settings, settings_from_env
from .store import TurnStore
from .store.memory import MemoryStore
from .turn_host import TurnHost
from .upstream import LettaClients, make_clients

log = logging.getLogger(__name__)


def make_store(settings: Settings) -> TurnStore:
    """The shared turn store: Redis when ``REDIS_URL`` is set, else this process's memory."""
    if settings.redis_url:
        from .store.redis import RedisStore

        log.info("turn state shared through Redis at %s", _without_password(settings.redis_url))
        return RedisStore.from_url(settings.redis_url, prefix=settings.redis_prefix)
    log.info("turn state in this process only (REDIS_URL is not set): run one worker and one replica")
    return MemoryStore()


def _without_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//…@{tail}" if at else url


def create_app(
    settings: Settings | None = None,
    client: AsyncLetta | None = None,
    store: TurnStore | None = None,
    agent_types: AgentTypes | None = None,
) -> Quart:
    """The service.  ``client`` replaces the Letta client, ``store`` the turn store and
    ``agent_types`` the types read from ``settings.agents_file`` (tests).

    Raises :class:`~app.settings.SettingsError` (startup fails) for a bad setting or agent-types file.
    """
    settings = settings if settings is not None else settings_from_env()
    if agent_types is None:
        agent_types = load_agent_types(settings.agents_file, model=settings.model, embedding=settings.embedding)
    app = Quart(__name__, static_folder=None)
    app.asgi_http_class = StreamingConnection
    app.request_class = LeanRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    clients = make_clients(settings) if client is None else LettaClients.single(client)
    turn_store = store if store is not None else make_store(settings)
    metrics_ = StreamMetrics()
    canceller = RunCanceller(clients.control, metrics=metrics_)
    host = TurnHost(
        turn_store,
        canceller,
        grace=settings.resume_grace,
        lease=settings.turn_lease,
        drain_seconds=settings.drain_seconds,
        metrics=metrics_,
    )
    svc = Services(
        settings,
        clients.crud,
        AgentRegistry(clients.crud, agent_types, lock=turn_store.lock),
        control=clients.control,
        streams=clients.streams,
        canceller=canceller,
        host=host,
        metrics=metrics_,
        conversations=ConversationIndex(clients.crud, lock=turn_store.lock),
    )
    # turns still running at shutdown get ``drain_seconds`` to end before they are handed off
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = settings.drain_seconds + 5
    app.extensions[EXTENSION] = svc
    for module in (health, live, metrics, agents, chat, openai):
        app.register_blueprint(module.blueprint)
    install_request_ids(app)
    install_auth(app, settings.service_token)

    @app.before_serving
    async def start_background() -> None:
        shutdown = cast(asyncio.Event, app.shutdown_event)  # Quart types it as a Protocol without wait()
        svc.draining = Halt()  # a fresh one for each time the app serves
        host.closed = anyio.Event()
        # the cancel queue outlives the host: turns still ending at shutdown may cancel runs
        app.add_background_task(canceller.run, host.closed.wait)
        app.add_background_task(host.run, shutdown.wait)

    @app.before_serving
    async def load_agents() -> None:
        try:
            count = await svc.registry.rebuild()
            log.info("agent index rebuilt from Letta: %d agents", count)
        except Exception as exc:  # Letta may start later: the index fills on demand
            log.warning("could not rebuild the agent index from Letta: %r", exc)

    @app.before_serving
    async def tune_collector() -> None:  # last: what startup built is frozen
        tune(settings.gc_young_threshold)

    @app.after_serving
    async def close_clients() -> None:
        if client is None:  # ours to close; a given client belongs to the caller
            for owned in clients.owned():
                await owned.close()
        if store is None:
            await turn_store.aclose()

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
