"""``GET /v1/models`` and ``POST /v1/chat/completions``: the OpenAI-compatible way in.

OpenWebUI (as a *connection*, no pipe) or any OpenAI client talks to the student's agent
here.  A model is an agent type (:mod:`app.openai_api`); the student is named by the
user headers OpenWebUI forwards (:mod:`app.identity`); the last user message goes to the
student's agent of that type, created on first use.  OpenWebUI's background tasks
(title, tags, ...) are answered here without the agent (:mod:`app.openai_tasks`).

* Streaming (``"stream": true``): the same stages as ``/chat/stream`` — Letta's stream →
  filter → throttle → keepalive — with the OpenAI chunk encoder
  (:mod:`pipeline.openai_chunks`) at the end, in the response body's task.
* Not streaming: the whole turn, as a ``chat.completion`` object.
* One turn per agent: the turn machine's ``Claim`` (409 while another turn runs, through
  either way in); the lease is renewed while the turn runs here (``host.owning``) and the
  turn is released (``Finish``) in every ending — before the stream's last frame, so the
  next message is never refused.
* No resume: this protocol has none.  A client that leaves cancels the Letta run at once.
* ``X-OpenWebUI-Chat-Id`` (forwarded with ``ENABLE_FORWARD_USER_INFO_HEADERS``) maps the chat to
  one Letta conversation of the agent, as ``chat_id`` does on ``/chat/stream``; optional
  ``X-OpenWebUI-User-Message-Id`` / ``X-OpenWebUI-User-Message-Parent-Id`` (custom headers with
  OpenWebUI's ``{{USER_MESSAGE_ID}}`` / ``{{USER_MESSAGE_PARENT_ID}}`` templates) spot regenerates
  and edits.  Without a chat id: the agent's default history.
* Errors are OpenAI error objects with the right status, all before a stream starts (a
  failure mid-stream is an error object in the stream, then ``[DONE]``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import attrs
from quart import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException

from pipeline.compose import open_pipeline
from pipeline.content import Image
from pipeline.errors import ConsumerStalled
from pipeline.events import Done, Error, Text, Usage
from pipeline.filter import filter_letta
from pipeline.keepalive import keepalive
from pipeline.letta_map import LettaMapper
from pipeline.letta_turn import LettaTurn, letta_source, start_turn
from pipeline.openai_chunks import DONE_FRAME, ChunkEncoder, completion, encode_openai
from pipeline.source import aclose_quietly
from pipeline.streams import Receive, Send
from pipeline.throttle import throttle

from ..bodies import MAX_ID_CHARS
from ..conversations import Target, target, whole_turn
from ..errors import ApiError, InvalidRequest, TurnInProgress, UpstreamError
from ..identity import student_from_headers
from ..images import checked_images, images_from_parts
from ..openai_api import (
    CompletionRequest,
    api_error_object,
    error_object,
    last_user_text,
    model_list,
    model_type,
)
from ..openai_tasks import background_task, task_answer
from ..replies import turn_events
from ..services import Services, json_body, services
from ..shutdown import ShuttingDown
from ..sse_body import sse_response
from ..turn_host import new_id
from ..turn_machine import Claim, Finish, Refused, Started
from ..upstream import letta_errors

log = logging.getLogger("letta_stream.openai")

blueprint = Blueprint("openai", __name__, url_prefix="/v1")


@blueprint.errorhandler(ApiError)
async def _api_error(exc: ApiError) -> tuple[dict[str, Any], int, dict[str, str]]:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    return api_error_object(exc), exc.status, headers


@blueprint.errorhandler(HTTPException)
async def _http_error(exc: HTTPException) -> tuple[dict[str, Any], int]:
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_object(status, code, exc.description or exc.name or code), status


@blueprint.get("/models")
async def models() -> dict[str, Any]:
    """One model per agent type."""
    return model_list(services().registry.types)


@blueprint.post("/chat/completions")
async def chat_completions() -> Response | dict[str, Any]:
    """The last user message to the student's agent of the model's type; its answer, streamed or whole."""
    svc = services()
    body = await json_body(CompletionRequest)
    agent_type = model_type(svc.registry.types, body.model)
    student = student_from_headers(request.headers, svc.settings.openwebui_jwt_secret)
    message = last_user_text(body.messages)
    reply = Reply(f"chatcmpl-{uuid.uuid4().hex}", body.model, int(time.time()))
    task = background_task(body)
    if task is not None:
        return reply.whole([Text(task_answer(task, message, svc.registry.types[agent_type].name)), Done("end_turn")])
    images = _last_user_images(svc, body.messages)
    if not message.strip() and not images:
        raise InvalidRequest("the last user message has no text", field="messages")
    limit = svc.settings.max_message_chars
    if len(message) > limit:
        raise InvalidRequest(f"the last user message is longer than {limit} characters", field="messages")
    if svc.draining.is_set():
        raise ShuttingDown("the service is restarting; try again in a moment")
    chat = {name: _header_id(header) for name, header in CHAT_HEADERS.items()}
    async with letta_errors():
        agent, _ = await svc.registry.get_or_create(student.user_id, agent_type, student.name)
    where = partial(target, svc.conversations, agent.agent_id, message, chat.pop("chat_id"), images=images, **chat)
    if body.stream:
        return await _stream(svc, agent.agent_id, where, reply)
    return await _whole(svc, agent.agent_id, where, reply)


CHAT_HEADERS = {
    "chat_id": "X-OpenWebUI-Chat-Id",
    "user_message_id": "X-OpenWebUI-User-Message-Id",
    "parent_message_id": "X-OpenWebUI-User-Message-Parent-Id",
}


def _header_id(name: str) -> str | None:
    """An id header's value: absent or blank is none; too long is a 400 naming the header."""
    value = request.headers.get(name, "").strip()
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequest(f"{name} is longer than {MAX_ID_CHARS} characters", field=name)
    return value or None


def _last_user_images(svc: Services, messages: list[dict[str, Any]]) -> list[Image]:
    """The pictures of the last user message (``image_url`` parts with ``data:`` URLs), checked as ``/chat``'s."""
    index = next((i for i in reversed(range(len(messages))) if messages[i].get("role") == "user"), None)
    if index is None:
        return []
    where = f"messages[{index}].content"
    images, names = images_from_parts(messages[index].get("content"), where)
    settings = svc.settings
    return checked_images(
        images, max_count=settings.max_images, max_bytes=settings.max_image_bytes, field=where, names=names
    )


@attrs.frozen
class Reply:
    """The completion being answered: its id, model and creation time."""

    id: str
    model: str
    created: int

    def whole(self, events: list[Any]) -> dict[str, Any]:
        """The ``chat.completion`` object of ``events``; a failed turn raises 502."""
        body = completion(events, id=self.id, model=self.model, created=self.created)
        if isinstance(body, Error):
            raise UpstreamError(body.message, code_from_agent=body.code)
        return body

    def encoder(self) -> ChunkEncoder:
        return ChunkEncoder(self.id, self.model, self.created)


async def _claim(svc: Services, agent_id: str, turn_id: str) -> None:
    """Make ``turn_id`` the agent's one turn (as ``/chat/stream`` does), or raise 409."""
    host = svc.host
    transition = await host.apply(agent_id, Claim(turn_id, host.owner, new_id("conn"), host.lease))
    if transition.first(Refused) is not None:
        svc.metrics.refused()
        raise TurnInProgress("the agent is still answering the previous message; send this one when it is done")


Where = Callable[[], Awaitable[Target]]
"""Resolves the turn's conversation (after the agent is claimed: a regenerate is judged on a quiet agent)."""


async def _whole(svc: Services, agent_id: str, where: Where, reply: Reply) -> dict[str, Any]:
    turn_id, host = new_id("turn"), svc.host
    await _claim(svc, agent_id, turn_id)
    try:
        async with host.owning(agent_id, turn_id):
            found = await where()
            async with letta_errors():
                # a whole turn holds its connection: it goes on a stream pool, not the small CRUD pool
                response = await whole_turn(svc.stream_client(), agent_id, found)
    except anyio.get_cancelled_exc_class():
        svc.canceller.submit(agent_id, None)  # the client left: nobody will read this reply
        raise
    finally:
        await host.apply_shielded(agent_id, Finish(turn_id, host.owner))
    events, _ = turn_events(response)
    usage = getattr(response, "usage", None)
    if usage is not None:
        counts = Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.step_count)
        events = [attrs.evolve(e, usage=counts) if isinstance(e, Done) else e for e in events]
    return reply.whole(events)


async def _stream(svc: Services, agent_id: str, where: Where, reply: Reply) -> Response:
    turn_id, host = new_id("turn"), svc.host
    await _claim(svc, agent_id, turn_id)
    try:
        found = await where()
        async with letta_errors():
            turn = await start_turn(
                svc.stream_client(),
                agent_id,
                found.text,
                images=found.images,
                control=svc.control,
                conversation_id=found.conversation_id,
                otid=found.otid,
            )
    except BaseException:
        await host.apply_shielded(agent_id, Finish(turn_id, host.owner))  # nothing started: free the agent
        raise
    stream = CompletionStream(svc, turn, turn_id, reply.encoder(), g.request_id)
    return sse_response(stream.frames(), stream.finalize)


@attrs.define(eq=False)
class CompletionStream:
    """One streamed completion: owns the Letta turn until it is read, and the agent's turn until released."""

    svc: Services
    turn: LettaTurn
    turn_id: str
    encoder: ChunkEncoder
    request_id: str
    started: float = attrs.field(factory=time.monotonic)
    mapper: LettaMapper = attrs.Factory(LettaMapper)
    released: bool = False
    run_noted: bool = False

    def __attrs_post_init__(self) -> None:
        self.svc.metrics.start()
        log.info("completion start request_id=%s agent_id=%s turn_id=%s", self.request_id, self.agent_id, self.turn_id)

    @property
    def agent_id(self) -> str:
        return self.turn.agent_id

    @asynccontextmanager
    async def frames(self) -> AsyncIterator[Receive]:
        """The frames: Letta's stream → filter → throttle → keepalive → OpenAI chunks, the lease renewed."""
        svc, settings = self.svc, self.svc.settings
        source = partial(
            letta_source,
            self.turn,
            cancel_timeout=settings.cancel_timeout,
            unfinished=svc.canceller.queue,  # the client left (no resume here): cancel the run now
            halt=svc.draining,
        )
        async with (
            svc.host.owning(self.agent_id, self.turn_id),
            open_pipeline(
                source,
                partial(filter_letta, mapper=self.mapper),
                self._note_run,
                partial(throttle, window=settings.throttle_window),
                partial(keepalive, interval=settings.keepalive_interval),
                partial(encode_openai, encoder=self.encoder, send_timeout=settings.send_timeout),
                self._release_before_done,
            ) as frames,
        ):
            yield frames

    async def _note_run(self, recv: Receive, send: Send) -> None:
        """Pass events on; record the run id in the turn's record once known (``Started``).

        The record then names the run, so a stop through ``/chat/cancel`` or a claim after this
        process died cancels exactly this run.
        """
        with send, recv:
            async for event in recv:
                if not self.run_noted and self.mapper.run_id is not None:
                    self.run_noted = True
                    try:
                        await self.svc.host.apply(self.agent_id, Started(self.turn_id, self.mapper.run_id))
                    except Exception as exc:  # the turn goes on; only a stop from elsewhere would miss the run
                        log.warning("recording run %s of turn %s failed: %r", self.mapper.run_id, self.turn_id, exc)
                await send.send(event)

    async def _release_before_done(self, recv: Receive, send: Send) -> None:
        """Pass frames on; free the agent before the last one, so the client's next message is not refused."""
        with send, recv:
            async for frame in recv:
                if frame.endswith(DONE_FRAME):
                    await self._release()
                await send.send(frame)

    async def _release(self) -> None:
        if not self.released:
            self.released = True
            host = self.svc.host
            await host.apply_shielded(self.agent_id, Finish(self.turn_id, host.owner))

    async def finalize(self, entered: bool, error: BaseException | None) -> None:
        """The response is done with: release what is still held, count, log.  Runs once, shielded."""
        if not entered:  # the client left before the body started: nobody read the turn
            await aclose_quietly(self.turn)
            self.svc.canceller.submit(self.agent_id, self.turn.run_id)
        await self._release()
        outcome = self._outcome(entered, error)
        self.svc.metrics.end(outcome)
        log.info(
            "completion end request_id=%s agent_id=%s turn_id=%s outcome=%s run_id=%s ms=%d",
            self.request_id,
            self.agent_id,
            self.turn_id,
            outcome,
            self.turn.run_id,
            (time.monotonic() - self.started) * 1000,
        )

    def _outcome(self, entered: bool, error: BaseException | None) -> str:
        if not entered or not self.encoder.finished:
            return "cancelled"
        if isinstance(error, (anyio.get_cancelled_exc_class(), ConsumerStalled)):
            return "cancelled"
        return "errored" if error is not None or self.encoder.failed else "finished"
