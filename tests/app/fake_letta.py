"""An in-memory stand-in for ``AsyncLetta``: just the calls the service makes, with real SDK types."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
from letta_client import APIConnectionError, NotFoundError
from letta_client.types import AgentState
from letta_client.types.agents import LettaResponse

from tests.pipeline import letta_chunks as c

_REQUEST = httpx.Request("POST", "http://letta.test/v1")


def not_found() -> NotFoundError:
    return NotFoundError("not found", response=httpx.Response(404, request=_REQUEST), body=None)


def unreachable() -> APIConnectionError:
    return APIConnectionError(request=_REQUEST)


class FakeStream:
    def __init__(self, chunks: list[Any]) -> None:
        self._chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[Any]:
        for chunk in self._chunks:
            yield chunk

    async def close(self) -> None:
        self.closed = True


class FakeMessages:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.streams: list[FakeStream] = []
        self.cancelled: list[str] = []
        self.reply = ["Hello", " student"]

    async def create(self, agent_id: str, *, streaming: bool = False, **kwargs: Any) -> LettaResponse | FakeStream:
        self._letta.check(agent_id)
        if streaming:
            stream = FakeStream(c.answer_turn(self.reply))
            self.streams.append(stream)
            return stream
        messages = [c.reasoning("hmm"), *[c.assistant(w) for w in self.reply]]
        return LettaResponse.model_construct(messages=messages, stop_reason=c.stop(), usage=c.usage())

    async def cancel(self, agent_id: str, **kwargs: Any) -> dict[str, str]:
        self.cancelled.append(agent_id)
        return {}


class FakeAgents:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.messages = FakeMessages(letta)
        self.created = 0

    async def create(self, **kwargs: Any) -> AgentState:
        self._letta.check()
        self.created += 1
        agent = AgentState.model_construct(
            id=f"agent-{next(self._letta.ids)}",
            name=kwargs["name"],
            tags=kwargs["tags"],
            metadata=kwargs.get("metadata"),
            created_at=datetime(2026, 11, 26, tzinfo=UTC),
        )
        self._letta.agents[agent.id] = agent
        return agent

    async def list(
        self, tags: list[str] | None = None, match_all_tags: bool = False, include: Any = None, **_: Any
    ) -> AsyncIterator[AgentState]:
        self._letta.check()
        for agent in list(self._letta.agents.values()):
            have = set(agent.tags or [])
            want = set(tags or [])
            if (want <= have) if match_all_tags else (not want or want & have):
                yield _as_returned(agent, include)

    async def retrieve(self, agent_id: str, include: Any = None, **_: Any) -> AgentState:
        self._letta.check(agent_id)
        return _as_returned(self._letta.agents[agent_id], include)


def _as_returned(agent: AgentState, include: Any) -> AgentState:
    """As Letta 0.16 does: relationships (tags among them) only when asked for with ``include``."""
    if include and "agent.tags" in include:
        return agent
    return agent.model_copy(update={"tags": []})


class FakeLetta:
    """``down=True`` makes every call fail as if Letta were unreachable."""

    def __init__(self) -> None:
        self.agents: dict[str, AgentState] = {}
        self.ids = itertools.count(1)
        self.down = False
        self.agents_api = FakeAgents(self)

    @property
    def agents_resource(self) -> FakeAgents:
        return self.agents_api

    def check(self, agent_id: str | None = None) -> None:
        if self.down:
            raise unreachable()
        if agent_id is not None and agent_id not in self.agents:
            raise not_found()

    async def health(self) -> Any:
        self.check()
        return type("Health", (), {"version": "fake", "status": "ok"})()

    async def close(self) -> None:
        pass


def make_fake() -> Any:
    """A FakeLetta whose ``.agents`` is the resource (its agent store is ``.store``)."""
    letta = FakeLetta()
    proxy = type("Letta", (), {})()
    proxy.agents = letta.agents_api
    proxy.store = letta
    proxy.health = letta.health
    proxy.close = letta.close
    return proxy
