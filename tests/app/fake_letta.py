"""An in-memory stand-in for ``AsyncLetta``: just the calls the service makes, with real SDK types.

Streams behave as Letta 0.16.8's foreground mode: ``agents.messages.create(streaming=True)``
starts a *run* (``run_id`` on every chunk, ``runs.retrieve`` says ``running``), the run
``completed`` when its stream is read to the end — and it goes on when its client closes
the stream early: it completes on its own once its chunks could have been produced (at
once, unless :attr:`FakeLetta.hold_after` holds it until :attr:`FakeLetta.go` is set).
``runs.messages.list`` then has its whole answer.  ``agents.messages.cancel`` marks the run
``cancelled`` and ends its open stream with a ``stop_reason`` chunk of ``cancelled``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import httpx
from letta_client import APIConnectionError, NotFoundError
from letta_client.types import AgentState, Conversation
from letta_client.types.agents import AssistantMessage, LettaResponse, UserMessage

from tests.pipeline import letta_chunks as c

_REQUEST = httpx.Request("POST", "http://letta.test/v1")


def not_found() -> NotFoundError:
    return NotFoundError("not found", response=httpx.Response(404, request=_REQUEST), body=None)


def unreachable() -> APIConnectionError:
    return APIConnectionError(request=_REQUEST)


def _with_run(chunk: Any, run_id: str) -> Any:
    return chunk.model_copy(update={"run_id": run_id}) if "run_id" in type(chunk).model_fields else chunk


class FakeHTTPResponse:
    """The streamed body of one turn as Letta frames it (``data: {json}`` per chunk, then ``[DONE]``)."""

    status_code = 200
    headers = httpx.Headers({"content-type": "text/event-stream"})
    request = _REQUEST
    extensions: dict[str, object] = {}  # noqa: RUF012  # read only: no transport hands its body over here

    def __init__(self, stream: FakeStream) -> None:
        self._stream = stream
        self.stream = self  # as httpx's ``Response.stream``: the raw body (no content coding here)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.aiter_bytes()

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
    """One foreground run: its chunks, how many were produced, and its status."""

    def __init__(self, letta: FakeLetta, run_id: str, agent_id: str, chunks: list[Any]) -> None:
        self._letta = letta
        self.id = run_id
        self.agent_id = agent_id
        self.chunks = [_with_run(chunk, run_id) for chunk in chunks]
        self.produced = 0
        self.status = "running"
        self.stop_reason: str | None = None
        self.cancelled = anyio.Event()

    def held(self) -> bool:
        """Still waiting at :attr:`FakeLetta.hold_after` for :attr:`FakeLetta.go`."""
        hold = self._letta.hold_after
        return hold is not None and not self._letta.go.is_set() and self.produced <= hold

    def settle(self) -> None:
        """A run nobody reads goes on by itself: it completes once nothing holds it."""
        if self.status == "running" and self.orphaned and not self.held():
            self.complete()

    orphaned = False
    """Its client closed the stream before the end."""

    def complete(self) -> None:
        if self.status == "running":
            self.produced = len(self.chunks)
            self.status, self.stop_reason = "completed", "end_turn"

    def cancel(self) -> None:
        if self.status == "running":
            self.status, self.stop_reason = "cancelled", "cancelled"
            self.cancelled.set()

    def answer(self) -> str:
        """The assistant text Letta has persisted for the run (what it produced)."""
        return "".join(
            ch.content for ch in self.chunks[: self.produced] if isinstance(ch, AssistantMessage)
        )  # contents are plain strings here


class FakeStream:
    """The open stream of one run's chunks."""

    def __init__(self, run: FakeRun, letta: FakeLetta) -> None:
        self.run = run
        self._letta = letta
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[Any]:
        run = self.run
        for i, chunk in enumerate(run.chunks):
            if i == self._letta.hold_after and run.status == "running":
                await self._hold()
            if run.status == "cancelled":
                yield c.stop("cancelled")
                return
            run.produced = max(run.produced, i + 1)
            yield chunk
            await anyio.lowlevel.checkpoint()
        run.complete()

    async def _hold(self) -> None:
        async with anyio.create_task_group() as tg:

            async def until(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(until, self._letta.go)
            tg.start_soon(until, self.run.cancelled)

    async def close(self) -> None:
        self.closed = True
        self.run.orphaned = True  # the client left: the run goes on without it
        self.run.settle()


class FakeRunMessages:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.listed: list[str] = []

    async def list(self, run_id: str, *, order: str = "asc", limit: int = 100, **_: Any) -> AsyncIterator[Any]:
        self._letta.check()
        run = self._letta.runs.get(run_id)
        if run is None:
            raise not_found()
        self.listed.append(run_id)
        run.settle()
        # persisted per step: the reasoning and the whole assistant message, once produced
        yield c.reasoning("Let me think.").model_copy(update={"run_id": run_id})
        if run.answer():
            yield c.assistant(run.answer()).model_copy(update={"run_id": run_id})


class FakeRuns:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.messages = FakeRunMessages(letta)

    async def retrieve(self, run_id: str, **_: Any) -> FakeRun:
        self._letta.check()
        run = self._letta.runs.get(run_id)
        if run is None:
            raise not_found()
        run.settle()
        return run


class FakeMessages:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.streams: list[FakeStream] = []
        self.sent: list[tuple[str, str]] = []
        """Every message that reached an agent: (agent id, text)."""
        self.cancelled: list[str] = []
        """The agent of every cancel request."""
        self.reply = ["Hello", " student"]
        self.with_streaming_response = FakeWithStreamingResponse(self)

    async def create(
        self, agent_id: str, *, streaming: bool = False, input: str = "", **kwargs: Any
    ) -> LettaResponse | FakeStream:
        letta = self._letta
        letta.check(agent_id)
        if "messages" in kwargs:
            input = kwargs.pop("messages")[0]["content"]
        self.sent.append((agent_id, input))
        if streaming:
            run = FakeRun(letta, f"run-{next(letta.ids)}", agent_id, c.answer_turn(self.reply))
            letta.runs[run.id] = run
            stream = FakeStream(run, letta)
            self.streams.append(stream)
            return stream
        messages = [c.reasoning("hmm"), *[c.assistant(w) for w in self.reply]]
        return LettaResponse.model_construct(messages=messages, stop_reason=c.stop(), usage=c.usage())

    async def cancel(self, agent_id: str, run_ids: Any = None, **kwargs: Any) -> dict[str, str]:
        self.cancelled.append(agent_id)
        for run in self._letta.runs.values():
            if run.agent_id == agent_id and (not isinstance(run_ids, list) or run.id in run_ids):
                run.cancel()
        return {}


class FakePage:
    def __init__(self, items: list[Any]) -> None:
        self.items = items


class FakeConversationMessages:
    """``conversations.messages``: sends go through :class:`FakeMessages` (recorded in ``sent``), with the conversation."""

    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.with_streaming_response = self
        self.sent: list[tuple[str, str, str | None]] = []
        """Every message sent to a conversation: (conversation id, text, otid)."""

    def create(self, conversation_id: str, **kwargs: Any) -> FakeStreamingCall:
        letta = self._letta
        conversation = letta.conversations.get(conversation_id)
        if conversation is None:
            raise not_found()
        message = kwargs["messages"][0] if "messages" in kwargs else {"content": kwargs.get("input", "")}
        self.sent.append((conversation_id, message["content"], message.get("otid")))
        letta.conversation_messages.setdefault(conversation_id, []).append(
            UserMessage.model_construct(
                id=f"message-{next(letta.ids)}",
                content=message["content"],
                otid=message.get("otid"),
                message_type="user_message",
            )
        )
        return FakeStreamingCall(letta.agents_api.messages, conversation.agent_id, kwargs)

    async def list(self, conversation_id: str, *, order: str = "asc", limit: int = 100, **_: Any) -> FakePage:
        self._letta.check()
        found = list(self._letta.conversation_messages.get(conversation_id, []))
        return FakePage((found[::-1] if order == "desc" else found)[:limit])


async def _post(letta: FakeLetta, path: str, *, cast_to: Any, body: dict[str, Any], **_: Any) -> Any:
    """``client.post``: only the non-streaming ``/v1/conversations/{id}/messages`` is faked."""
    conversation_id = path.removeprefix("/v1/conversations/").removesuffix("/messages")
    assert body.get("streaming") is False, body
    assert cast_to is LettaResponse
    call = letta.conversations_api.messages.create(
        conversation_id, **{k: v for k, v in body.items() if k != "streaming"}
    )
    return await letta.agents_api.messages.create(call._agent_id, **call._kwargs)


class FakeConversations:
    """``conversations``: create, and list by agent with Letta's substring ``summary_search``."""

    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.messages = FakeConversationMessages(letta)
        self.created = 0
        self.list_delay = 0.0
        """Seconds each list takes (lets racing requests interleave)."""

    async def create(self, *, agent_id: str, summary: str | None = None, **_: Any) -> Conversation:
        self._letta.check(agent_id)
        self.created += 1
        conversation = Conversation.model_construct(
            id=f"conv-{next(self._letta.ids)}", agent_id=agent_id, summary=summary, in_context_message_ids=[]
        )
        self._letta.conversations[conversation.id] = conversation
        return conversation

    async def list(
        self, *, agent_id: str | None = None, summary_search: str | None = None, order: str = "desc", **_: Any
    ) -> list[Conversation]:
        self._letta.check()
        await anyio.sleep(self.list_delay)
        found = [
            c
            for c in self._letta.conversations.values()
            if (agent_id is None or c.agent_id == agent_id)
            and (not summary_search or summary_search in (c.summary or ""))
        ]
        return found if order == "asc" else found[::-1]


class FakeAgents:
    def __init__(self, letta: FakeLetta) -> None:
        self._letta = letta
        self.messages = FakeMessages(letta)
        self.created = 0
        self.requests: list[dict[str, Any]] = []
        """The keyword arguments of every ``create``, in order."""

    async def create(self, **kwargs: Any) -> AgentState:
        self._letta.check()
        self.created += 1
        self.requests.append(kwargs)
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
        self.runs: dict[str, FakeRun] = {}
        self.hold_after: int | None = None
        """Runs pause before chunk ``hold_after`` until :attr:`go` is set (a turn still running)."""
        self.go = anyio.Event()
        self.agents_api = FakeAgents(self)
        self.runs_api = FakeRuns(self)
        self.conversations: dict[str, Conversation] = {}
        self.conversation_messages: dict[str, list[Any]] = {}
        self.conversations_api = FakeConversations(self)

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
    """A FakeLetta whose ``.agents`` is the resource (its agent store, runs and switches are ``.store``)."""
    letta = FakeLetta()
    proxy = type("Letta", (), {})()
    proxy.agents = letta.agents_api
    proxy.runs = letta.runs_api
    proxy.conversations = letta.conversations_api
    proxy.post = lambda path, **kwargs: _post(letta, path, **kwargs)
    proxy.store = letta
    proxy.health = letta.health
    proxy.close = letta.close
    return proxy
