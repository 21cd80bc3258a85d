"""What the views share: settings, the Letta client and the agent registry, kept on the app."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import attrs
from letta_client import AsyncLetta
from quart import current_app, request

from pipeline.halt import Halt

from .agents import AgentRegistry
from .bodies import parse_body
from .cancels import RunCanceller
from .conversations import ConversationIndex
from .errors import InvalidRequest
from .metrics import StreamMetrics
from .settings import Settings
from .turn_host import TurnHost

T = TypeVar("T")

EXTENSION = "letta_stream"


@attrs.define(eq=False)
class Services:
    settings: Settings
    client: AsyncLetta
    registry: AgentRegistry
    control: AsyncLetta
    """A small separate client for cancels, health checks and takeovers."""
    streams: list[AsyncLetta]
    """Clients whose pools carry the open streams, used in turn."""
    canceller: RunCanceller
    """Where runs to cancel are queued."""
    host: TurnHost
    """This process's turns and the shared turn state (:mod:`app.turn_host`)."""
    metrics: StreamMetrics
    conversations: ConversationIndex = attrs.field(
        default=attrs.Factory(lambda self: ConversationIndex(self.client), takes_self=True)
    )
    """OpenWebUI chat → Letta conversation (:mod:`app.conversations`)."""
    draining: Halt = attrs.Factory(Halt)
    """Set when the server drains (it is shutting down): open streams end (resumably), new ones are refused."""
    _next: int = 0

    def stream_client(self) -> AsyncLetta:
        """The client for the next stream.

        httpx's pool does work proportional to its open connections on every request
        and every close, so thousands of streams in one pool make setup and a burst of
        disconnects quadratic; shards keep each pool small.
        """
        pool = self.streams or [self.client]
        self._next = (self._next + 1) % len(pool)
        return pool[self._next]


def services() -> Services:
    """The running app's services."""
    found: Services = current_app.extensions[EXTENSION]
    return found


async def json_body(cls: type[T]) -> T:
    """The request's JSON body as ``cls``; :class:`InvalidRequest` if it is not JSON or does not fit."""
    raw = await request.get_data(as_text=False)
    try:
        data: Any = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError (invalid UTF-8) alike
        raise InvalidRequest(f"the body is not valid UTF-8 JSON: {exc}", field=None) from exc
    return parse_body(data, cls)
