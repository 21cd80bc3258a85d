"""``POST /chat`` (the whole reply at once) and ``POST /chat/stream`` (Server-Sent Events)."""

from __future__ import annotations

from typing import Any, TypeVar

import anyio
from quart import Blueprint, Response, g

from pipeline.events import Error
from pipeline.letta_map import LettaMapper
from pipeline.letta_turn import start_turn
from pipeline.presets import letta_sse

from ..bodies import ChatRequest, StreamRequest, to_json
from ..errors import InvalidRequest, NotFound, UpstreamError
from ..replies import chat_reply, turn_events
from ..services import Services, json_body, services
from ..shutdown import ShuttingDown
from ..sse_body import sse_response
from ..stream_session import StreamSession
from ..turns import TurnInProgress
from ..upstream import letta_errors

blueprint = Blueprint("chat", __name__)


Body = TypeVar("Body", bound=ChatRequest)


async def _admit(svc: Services, cls: type[Body]) -> Body:
    """The request's body, once it is valid, its agent exists and is the user's, and the agent is free.

    On success the agent is claimed: the caller must release it (directly, or through the stream's end).
    """
    body = await json_body(cls)
    limit = svc.settings.max_message_chars
    if len(body.message) > limit:
        raise InvalidRequest(f"message is longer than {limit} characters", field="message")
    async with letta_errors():
        info = await svc.registry.get(body.agent_id)
    if info is None or (body.user_id is not None and info.user_id != body.user_id):
        raise NotFound("agent not found")  # unknown or someone else's: the same answer, saying no more
    try:
        svc.guard.claim(body.agent_id)
    except TurnInProgress:
        svc.metrics.refused_busy += 1
        raise
    return body


@blueprint.post("/chat")
async def chat() -> dict[str, Any]:
    """Send a message; answer with the agent's whole reply once the turn is over."""
    svc = services()
    body = await _admit(svc, ChatRequest)
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
    """Send a message; stream the turn as SSE.  404/502/503 are answered before the stream starts."""
    svc: Services = services()
    if svc.draining is not None and svc.draining.is_set():
        raise ShuttingDown("the service is restarting; try again in a moment")
    body = await _admit(svc, StreamRequest)
    try:
        async with letta_errors():
            turn = await start_turn(
                svc.stream_client(),
                body.agent_id,
                body.message,
                stream_tokens=body.stream_tokens,
                thinking=body.enable_thinking,
                control=svc.control,
            )
    except BaseException:
        svc.guard.release(body.agent_id)
        raise
    session = StreamSession(
        g.request_id,
        body.agent_id,
        turn,
        svc.guard,
        svc.metrics,
        cancel_timeout=svc.settings.cancel_timeout,
        abandon=svc.canceller.abandon if svc.canceller else None,
    )
    pipeline = letta_sse(
        turn,
        mapper=LettaMapper(show_reasoning=body.enable_thinking),
        window=svc.settings.throttle_window,
        keepalive_interval=svc.settings.keepalive_interval,
        send_timeout=svc.settings.send_timeout,
        cancel_timeout=svc.settings.cancel_timeout,
        observe=session.observe,
        abandon=svc.canceller.abandon if svc.canceller else None,
        stop=svc.draining,
    )
    return sse_response(pipeline, session.finalize)
