"""``POST /chat`` (the whole reply at once), ``POST /chat/stream`` (Server-Sent Events, resumable)
and ``POST /chat/cancel`` (the stop button)."""

from __future__ import annotations

from typing import Any, TypeVar

import anyio
from quart import Blueprint, Response, g, request

from pipeline.cursor import BadCursor, Cursor, parse_cursor
from pipeline.events import Error
from pipeline.letta_map import LettaMapper
from pipeline.letta_turn import LettaTurn
from pipeline.presets import letta_sse

from ..bodies import CancelRequest, ChatRequest, StreamRequest, to_json
from ..errors import InvalidRequest, NotFound, UpstreamError
from ..replies import chat_reply, turn_events
from ..resume import claim_agent, claim_for_resume, open_turn, reopen_turn
from ..services import Services, json_body, services
from ..shutdown import ShuttingDown
from ..sse_body import sse_response
from ..stream_session import StreamSession
from ..upstream import letta_errors

blueprint = Blueprint("chat", __name__)


Body = TypeVar("Body", bound=ChatRequest)


async def _admit(svc: Services, cls: type[Body]) -> Body:
    """The request's body, once it is valid and its agent exists and is the user's."""
    body = await json_body(cls)
    limit = svc.settings.max_message_chars
    if len(body.message) > limit:
        raise InvalidRequest(f"message is longer than {limit} characters", field="message")
    await _check_owner(svc, body.agent_id, body.user_id)
    return body


async def _check_owner(svc: Services, agent_id: str, user_id: str | None) -> None:
    async with letta_errors():
        info = await svc.registry.get(agent_id)
    if info is None or (user_id is not None and info.user_id != user_id):
        raise NotFound("agent not found")  # unknown or someone else's: the same answer, saying no more


def _resume_position() -> Cursor | None:
    """The ``Last-Event-ID`` a reconnecting client sent, if any."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        return None
    try:
        return parse_cursor(raw)
    except BadCursor as exc:
        raise InvalidRequest(str(exc), field="Last-Event-ID") from exc


@blueprint.post("/chat")
async def chat() -> dict[str, Any]:
    """Send a message; answer with the agent's whole reply once the turn is over."""
    svc = services()
    body = await _admit(svc, ChatRequest)
    await claim_agent(svc, body.agent_id)
    try:
        async with letta_errors():
            # a whole turn holds its connection: it goes on a stream pool, not the small CRUD pool
            response = await svc.stream_client().agents.messages.create(body.agent_id, input=body.message)
    except anyio.get_cancelled_exc_class():
        if svc.canceller is not None:
            svc.canceller.submit(body.agent_id, None)
        raise
    finally:
        svc.guard.release(body.agent_id)
    events, mapper = turn_events(response)
    reply = chat_reply(body.agent_id, events, mapper.run_id)
    if isinstance(reply, Error):
        raise UpstreamError(reply.message, code_from_agent=reply.code)
    result: dict[str, Any] = to_json(reply)
    return result


@blueprint.post("/chat/stream")
async def chat_stream() -> Response:
    """Send a message and stream the turn as SSE; with ``Last-Event-ID``, resume that turn instead.

    404/409/502/503 are answered before the stream starts.  A resumed turn sends nothing
    to the agent: the ``message`` of the body is not sent again.
    """
    svc: Services = services()
    if svc.draining is not None and svc.draining.is_set():
        raise ShuttingDown("the service is restarting; try again in a moment")
    position = _resume_position()
    body = await _admit(svc, StreamRequest)
    if position is None:
        await claim_agent(svc, body.agent_id)
    else:
        await claim_for_resume(svc, body.agent_id, position)
    try:
        turn = await (open_turn(svc, body) if position is None else reopen_turn(svc, body.agent_id, position))
    except BaseException:
        svc.guard.release(body.agent_id)
        if position is not None and svc.canceller is not None:  # nobody can read that turn now: stop it
            svc.canceller.submit(body.agent_id, position.run_id)
        raise
    return _stream(svc, body, turn, position)


def _stream(svc: Services, body: StreamRequest, turn: LettaTurn, position: Cursor | None) -> Response:
    session = StreamSession(
        g.request_id,
        body.agent_id,
        turn,
        svc.guard,
        svc.metrics,
        cancel_timeout=svc.settings.cancel_timeout,
        cancel=svc.canceller.abandon if svc.canceller else None,
        detached=svc.detached,
        draining=svc.draining,
        resumed=position is not None,
    )
    mapper = LettaMapper(
        show_reasoning=body.enable_thinking,
        resumable=turn.background,
        position=None if position is None else str(position),
    )
    pipeline = letta_sse(
        turn,
        mapper=mapper,
        window=svc.settings.throttle_window,
        keepalive_interval=svc.settings.keepalive_interval,
        send_timeout=svc.settings.send_timeout,
        cancel_timeout=svc.settings.cancel_timeout,
        observe=session.observe,
        abandon=session.abandon,
        stop=svc.draining,
    )
    return sse_response(pipeline, session.finalize)


@blueprint.post("/chat/cancel")
async def chat_cancel() -> tuple[dict[str, Any], int]:
    """Stop the agent's turn now (the stop button): its run is cancelled, even while detached."""
    svc = services()
    body = await json_body(CancelRequest)
    await _check_owner(svc, body.agent_id, body.user_id)
    held = svc.detached.stop(body.agent_id) if svc.detached is not None else False
    if not held and svc.canceller is not None:
        svc.canceller.submit(body.agent_id, body.run_id)
    svc.metrics.stops += 1
    return {"agent_id": body.agent_id, "cancelling": True}, 202
