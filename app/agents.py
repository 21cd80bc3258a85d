"""One Letta agent per (student, agent type), found or created through Letta itself.

Letta is the source of truth: each agent we create carries the tags
``letta-stream``, ``user:<user_id>`` and ``agent_type:<type>``.  The registry keeps
an in-memory index of them, rebuilt from Letta at startup and consulted on a miss.
Creation holds a lock per (user, type) in the turn store (:meth:`app.store.TurnStore.lock`:
Redis when replicas share one), so concurrent requests for the same student — through
any worker or replica — create one agent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import attrs
from letta_client import APIStatusError, AsyncLetta, NotFoundError

from .agent_types import AgentTemplate, AgentTypes
from .bodies import AgentInfo
from .errors import AgentTypeMisconfigured, InvalidRequest, UpstreamUnavailable
from .store import LockTimeout
from .store.memory import MemoryStore

Lock = Callable[..., AbstractAsyncContextManager[None]]
"""``lock(name, ttl=..., wait=...)``: a store's lock (:meth:`app.store.TurnStore.lock`)."""

CREATE_LOCK_SECONDS: Final = 60.0
"""The longest a creation may hold its lock (a holder that dies frees it then)."""

SERVICE_TAG: Final = "letta-stream"

log = logging.getLogger(__name__)


def _tag_value(tags: Iterable[str], prefix: str) -> str | None:
    return next((t.removeprefix(prefix) for t in tags if t.startswith(prefix)), None)


def agent_info(agent: Any) -> AgentInfo | None:
    """Our view of a Letta ``AgentState``; ``None`` for an agent this service did not create.

    Tags are the source of truth; the metadata written at creation is the fallback
    for a response that came without its tags.
    """
    tags = list(agent.tags or [])
    meta = agent.metadata if isinstance(getattr(agent, "metadata", None), dict) else {}
    user_id = _tag_value(tags, "user:") or meta.get("user_id")
    agent_type = _tag_value(tags, "agent_type:") or meta.get("agent_type")
    ours = SERVICE_TAG in tags or meta.get("created_by") == SERVICE_TAG
    if not ours or not isinstance(user_id, str) or not isinstance(agent_type, str):
        return None
    created = agent.created_at.isoformat() if getattr(agent, "created_at", None) else None
    return AgentInfo(agent.id, user_id, agent_type, agent.name, created)


def tools_detail(exc: APIStatusError) -> str:
    """Letta's own words about the missing tools (its ``detail``), else its whole message."""
    body = exc.body
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail or exc.message)


@attrs.define
class AgentRegistry:
    """Finds and creates students' agents, each from its type's definition in ``types``.

    Every read asks for ``include=["agent.tags"]``: Letta returns no relationships
    unless asked, and an agent's tags are one.
    """

    client: AsyncLetta
    types: AgentTypes
    lock: Lock = attrs.Factory(lambda: MemoryStore().lock)
    _by_key: dict[tuple[str, str], AgentInfo] = attrs.field(factory=dict, init=False)
    _by_id: dict[str, AgentInfo] = attrs.field(factory=dict, init=False)

    async def rebuild(self) -> int:
        """Reload the index from Letta; the number of agents found."""
        self._by_key.clear()
        self._by_id.clear()
        async for agent in self.client.agents.list(tags=[SERVICE_TAG], include=["agent.tags"]):
            info = agent_info(agent)
            if info is not None:
                self._remember(info)
        return len(self._by_id)

    async def get_or_create(
        self, user_id: str, agent_type: str, user_name: str | None = None
    ) -> tuple[AgentInfo, bool]:
        """The student's agent of that type, and whether it was created now."""
        template = self.types.get(agent_type)
        if template is None:
            known = ", ".join(self.types)
            raise InvalidRequest(f"unknown agent_type {agent_type!r} (known: {known})", field="agent_type")
        key = (user_id, agent_type)
        found = self._by_key.get(key)
        if found is not None:
            return found, False
        try:
            async with self.lock(f"create:{user_id}:{agent_type}", ttl=CREATE_LOCK_SECONDS, wait=CREATE_LOCK_SECONDS):
                return await self._find_or_create(user_id, agent_type, template, user_name)
        except LockTimeout as exc:
            raise UpstreamUnavailable("the student's agent is still being created; try again") from exc

    async def _find_or_create(
        self, user_id: str, agent_type: str, template: AgentTemplate, user_name: str | None
    ) -> tuple[AgentInfo, bool]:
        """Under the creation lock: another worker or replica may have created it meanwhile (Letta knows)."""
        found = await self._find(user_id, agent_type)
        if found is not None:
            return found, False
        try:
            agent = await self._create(user_id, template, user_name)
        except APIStatusError as exc:
            if exc.status_code != 400 or "tools not found" not in str(exc.message).lower():
                raise
            # Letta 0.16.8 answers 400 "Tools not found by name: {...}" for a tool it does not have
            message = (
                f"agent type {agent_type!r} ({self.types.source}) names tools Letta does not have: {tools_detail(exc)}"
            )
            log.error("cannot create an agent: %s", message)
            raise AgentTypeMisconfigured(message, field="agent_type") from exc
        info = agent_info(agent)
        assert info is not None, "an agent created with our tags is ours"
        self._remember(info)
        return info, True

    async def _create(self, user_id: str, template: AgentTemplate, user_name: str | None) -> Any:
        agent_type = template.id
        return await self.client.agents.create(
            name=f"{agent_type}-{user_id}"[:100],
            agent_type=template.letta_agent_type,
            model=template.model,
            embedding=template.embedding,
            memory_blocks=template.memory_blocks(user_name),
            tools=list(template.tools),
            tags=[SERVICE_TAG, f"user:{user_id}", f"agent_type:{agent_type}"],
            metadata={"user_id": user_id, "agent_type": agent_type, "created_by": SERVICE_TAG},
        )

    async def list_for_user(self, user_id: str) -> list[AgentInfo]:
        """The student's agents, as Letta has them now."""
        found = []
        tags = [SERVICE_TAG, f"user:{user_id}"]
        async for agent in self.client.agents.list(tags=tags, match_all_tags=True, include=["agent.tags"]):
            info = agent_info(agent)
            if info is not None:
                self._remember(info)
                found.append(info)
        return found

    async def get(self, agent_id: str) -> AgentInfo | None:
        """One of our agents by id, or ``None`` (unknown to Letta, or not created by this service)."""
        if agent_id in self._by_id:
            return self._by_id[agent_id]
        try:
            agent = await self.client.agents.retrieve(agent_id, include=["agent.tags"])
        except NotFoundError:
            return None
        info = agent_info(agent)
        if info is not None:
            self._remember(info)
        return info

    def forget(self, agent_id: str) -> None:
        """Drop an agent Letta no longer has from the index."""
        info = self._by_id.pop(agent_id, None)
        if info is not None:
            self._by_key.pop((info.user_id, info.agent_type), None)

    async def _find(self, user_id: str, agent_type: str) -> AgentInfo | None:
        tags = [SERVICE_TAG, f"user:{user_id}", f"agent_type:{agent_type}"]
        async for agent in self.client.agents.list(tags=tags, match_all_tags=True, include=["agent.tags"]):
            info = agent_info(agent)
            if info is not None:
                self._remember(info)
                return info
        return None

    def _remember(self, info: AgentInfo) -> None:
        self._by_key[(info.user_id, info.agent_type)] = info
        self._by_id[info.agent_id] = info
