"""An in-memory stand-in for ``AsyncLetta``: just the calls the service makes, with real SDK types."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import httpx
from letta_client import APIConnectionError, APIStatusError, NotFoundError
from letta_client.types import AgentState
from letta_client.types.agents import LettaResponse

from tests.pipeline import letta_chunks as c

_REQUEST = httpx.Request("POST", "http://letta.test/v1")


def not_found() -> NotFoundError:
    return NotFoundError("not found", response=httpx.Response(404, request=_REQUEST), body=None)


def unreachable() -> APIConnectionError:
    return APIConnectionError(request=_REQUEST)


def no_redis() -> APIStatusError:
    """What Letta 0.16.8 answers to ``background=True`` when it has no Redis."""
    message = "Background streaming requires Redis to be running."
    return APIStatusError(message, response=httpx.Response(503, request=_REQUEST), body={"detail": message})


class FakeStream:
    """Chunks of one turn; with ``hold_after``, it pauses after that many until ``letta.go`` is set."""

    def __init__(self, chunks: list[Any], letta: FakeLetta | None = None, hold_after: int | None = None) -> None:
        self._chunks = chunks
        self._letta = letta
        self._hold_after = hold_after
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[Any]:
        for i, chunk in enumerate(self._chunks):
            if i == self._hold_after and self._letta is not None:
                await self._letta.go.wait()
            yield chunk
            await anyio.lowlevel.checkpoint()

    async def close(self) -> None:
        self.closed = True


class FakeHTTPResponse:
    """The streamed body of one turn as Letta frames it (``data: {json}`` per chunk, then ``[DONE]``)."""

    status_code = 200

    def __init__(self, stream: FakeStream) -> None:
        self._stream = stream

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield b"data: " + chunk.model_dump_json().encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        await self._stream.close()


class FakeAPIResponse:
    """What ``with_streaming_response.create(...)`` enters: letta-client's ``AsyncAPIResponse``, streamed."""

    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.http_response = FakeHTTPResponse(stream)

    async def close(self) -> None:
        await self.stream.close()


class FakeStreamingCall:
    def __init__(self, messages: FakeMessages, agent_id: str, kwargs: dict[str, Any]) -> None:
        self._messages, self._agent_id, self._kwargs = messages, agent_id, kwargs

    async def __aenter__(self) -> FakeAPIResponse:
        stream = await self._messages.create(self._agent_id, **self._kwargs)
        assert isinstance(stream, FakeStream)
        return FakeAPIResponse(stream)


class FakeWithStreamingResponse:
    def __init__(self, messages: FakeMessages) -> None:
        self._messages = messages

    def create(self, agent_id: str, **kwargs: Any) -> FakeStreamingCall:
        return FakeStreamingCall(self._messages, agent_id, kwargs)


class FakeRun:
    def __init__(self, run_id: str, agent_id: str, chunks: list[Any]) -> None:
        self.id = run_id
        self.agent_id = agent_id
        self.chunks = chunks
        self.status = "running"
        self.background = True


class FakeRunMessages:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.resumed: list[tuple[str, int]] = []

    async def stream(self, run_id: str, *, starting_after: int = 0, **_: Any) -> FakeStream:
        """As Letta replays a background run from Redis: every chunk after ``starting_after``."""
        run = self._letta.runs.get(run_id)
        if run is None:
            raise not_found()
        if not run.background:
            message = "INVALID_ARGUMENT: Run was not created in background mode, so it cannot be retrieved."
            raise APIStatusError(message, response=httpx.Response(400, request=_REQUEST), body={"detail": message})
        self.resumed.append((run_id, starting_after))
        seqs = [getattr(ch, "seq_id", None) for ch in run.chunks]
        rest = run.chunks[seqs.index(starting_after) + 1 :] if starting_after else run.chunks
        return FakeStream(rest, self._letta, self._letta.resume_hold_after)


class FakeRuns:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.messages = FakeRunMessages(letta)

    async def retrieve(self, run_id: str, **_: Any) -> FakeRun:
        self._letta.check()
        run = self._letta.runs.get(run_id)
        if run is None:
            raise not_found()
        return run


class FakeMessages:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.streams: list[FakeStream] = []
        self.cancelled: list[str] = []
        self.reply = ["Hello", " student"]
        self.with_streaming_response = FakeWithStreamingResponse(self)

    async def create(
        self, agent_id: str, *, streaming: bool = False, background: Any = None, **kwargs: Any
    ) -> LettaResponse | FakeStream:
        letta = self._letta
        letta.check(agent_id)
        if streaming:
            chunks = c.answer_turn(self.reply)
            if background is True:
                if not letta.redis:
                    raise no_redis()
                run_id = f"run-{next(letta.ids)}"
                chunks = c.numbered(chunks, run_id)
                letta.runs[run_id] = FakeRun(run_id, agent_id, chunks)
            stream = FakeStream(chunks, letta, letta.hold_after)
            self.streams.append(stream)
            return stream
        messages = [c.reasoning("hmm"), *[c.assistant(w) for w in self.reply]]
        return LettaResponse.model_construct(messages=messages, stop_reason=c.stop(), usage=c.usage())

    async def cancel(self, agent_id: str, run_ids: Any = None, **kwargs: Any) -> dict[str, str]:
        self.cancelled.append(agent_id)
        for run in self._letta.runs.values():
            if run.agent_id == agent_id and (not isinstance(run_ids, list) or run.id in run_ids):
                run.status = "cancelled"
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
        self.redis = True
        """Background mode works (Letta has Redis)."""
        self.runs: dict[str, FakeRun] = {}
        self.hold_after: int | None = None
        """Streams pause after this many chunks until :attr:`go` is set (a turn still running)."""
        self.resume_hold_after: int | None = None
        self.go = anyio.Event()
        self.agents_api = FakeAgents(self)
        self.runs_api = FakeRuns(self)

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
    proxy.runs = letta.runs_api
    proxy.store = letta
    proxy.health = letta.health
    proxy.close = letta.close
    return proxy
