"""``POST /chat`` (the whole reply at once), ``POST /chat/stream`` (Server-Sent Events, resumable)
and ``POST /chat/cancel`` (the stop button)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
import attrs
from quart import Blueprint, Response, g, request

from pipeline.events import Error
from pipeline.handoff import HandoffReceive, HandoffSend, create_handoff
from pipeline.letta_map import LettaMapper
from pipeline.letta_turn import start_turn

from ..bodies import CancelRequest, ChatRequest, StreamRequest, to_json
from ..conversations import Target, target, whole_turn
from ..errors import InvalidRequest, NotFound, NotResumable, TurnInProgress, UpstreamError
from ..frame_ids import BadFrameId, FrameId, parse_frame_id
from ..images import checked_images
from ..replies import chat_reply, turn_events
from ..services import Services, json_body, services
from ..shutdown import ShuttingDown
from ..store import LogFrame
from ..stream_body import Pump, StreamBody, pump, stream_response
from ..stream_session import StreamSession
from ..turn_host import new_id
from ..turn_machine import Adopt, Claim, Finish, Refused, Stop, TakeOver
from ..turn_runner import TurnRunner
from ..upstream import letta_errors

blueprint = Blueprint("chat", __name__)


Body = TypeVar("Body", bound=ChatRequest)
T = TypeVar("T")

FOLLOW_BATCH = 64
"""A resume hands at most this many log frames to its response at a time (one write)."""


async def _admit(svc: Services, cls: type[Body]) -> Body:
    """The request's body, once it is valid and its agent exists and is the user's."""
    body = await json_body(cls)
    limit = svc.settings.max_message_chars
    if len(body.message) > limit:
        raise InvalidRequest(f"message is longer than {limit} characters", field="message")
    settings = svc.settings
    images = checked_images(body.images, max_count=settings.max_images, max_bytes=settings.max_image_bytes)
    await _check_owner(svc, body.agent_id, body.user_id)
    return attrs.evolve(body, images=images) if body.images else body


async def _check_owner(svc: Services, agent_id: str, user_id: str | None) -> None:
    async with letta_errors():
        info = await svc.registry.get(agent_id)
    if info is None or (user_id is not None and info.user_id != user_id):
        raise NotFound("agent not found")  # unknown or someone else's: the same answer, saying no more


def _resume_position() -> FrameId | None:
    """The ``Last-Event-ID`` a reconnecting client sent, if any."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        return None
    try:
        return parse_frame_id(raw)
    except BadFrameId as exc:
        raise InvalidRequest(str(exc), field="Last-Event-ID") from exc


async def _claim(svc: Services, agent_id: str, turn_id: str, reader: str) -> None:
    """Make ``turn_id`` the agent's one turn, or raise 409 :class:`TurnInProgress`."""
    host = svc.host
    transition = await host.apply(agent_id, Claim(turn_id, host.owner, reader, host.lease))
    if transition.first(Refused) is not None:
        svc.metrics.refused()
        raise TurnInProgress("the agent is still answering the previous message; try again when it is done")


async def _target(svc: Services, body: ChatRequest) -> Target:
    """The chat's conversation (none without a ``chat_id``) and what the agent is sent."""
    return await target(
        svc.conversations,
        body.agent_id,
        body.message,
        body.chat_id,
        chat_title=body.chat_title,
        user_message_id=body.user_message_id,
        parent_message_id=body.parent_message_id,
        images=body.images,
    )


@blueprint.post("/chat")
async def chat() -> dict[str, Any]:
    """Send a message; answer with the agent's whole reply once the turn is over."""
    svc = services()
    body = await _admit(svc, ChatRequest)
    turn_id, host = new_id("turn"), svc.host
    await _claim(svc, body.agent_id, turn_id, reader=new_id("conn"))
    try:
        async with host.owning(body.agent_id, turn_id):
            where = await _target(svc, body)
            async with letta_errors(), svc.conversations.forgetting_missing(body.agent_id, body.chat_id):
                # a whole turn holds its connection: it goes on a stream pool, not the small CRUD pool
                response = await whole_turn(svc.stream_client(), body.agent_id, where)
    except anyio.get_cancelled_exc_class():
        svc.canceller.submit(body.agent_id, None)  # the client left: nobody will read this reply
        raise
    finally:
        await host.apply_shielded(body.agent_id, Finish(turn_id, host.owner))
    events, mapper = turn_events(response)
    reply = chat_reply(body.agent_id, events, mapper.run_id)
    if isinstance(reply, Error):
        raise UpstreamError(reply.message, code_from_agent=reply.code)
    result: dict[str, Any] = to_json(reply)
    return result


@blueprint.post("/chat/stream")
async def chat_stream() -> Response:
    """Send a message and stream the turn as SSE; with ``Last-Event-ID``, resume that turn instead.

    404/409/410/502/503 are answered before the stream starts.  A resumed turn sends
    nothing to the agent: the ``message`` of the body is not sent again.
    """
    svc: Services = services()
    if svc.draining.is_set():
        raise ShuttingDown("the service is restarting; try again in a moment")
    position = _resume_position()
    body = await _admit(svc, StreamRequest)
    if position is None:
        return await _new_turn(svc, body)
    return await _resume(svc, body, position)


async def _new_turn(svc: Services, body: StreamRequest) -> Response:
    turn_id, reader, host = new_id("turn"), new_id("conn"), svc.host
    await _claim(svc, body.agent_id, turn_id, reader)
    try:
        where = await _target(svc, body)
        async with letta_errors(), svc.conversations.forgetting_missing(body.agent_id, body.chat_id):
            turn = await start_turn(
                svc.stream_client(),
                body.agent_id,
                where.text,
                images=where.images,
                stream_tokens=body.stream_tokens,
                thinking=body.enable_thinking,
                control=svc.control,
                conversation_id=where.conversation_id,
                otid=where.otid,
            )
    except BaseException:
        await host.apply_shielded(body.agent_id, Finish(turn_id, host.owner))  # nothing started: free the agent
        raise
    live: tuple[HandoffSend[list[LogFrame]], HandoffReceive[list[LogFrame]]] = create_handoff(1)
    send, recv = live  # one batch: while the client writes, the throttle merges text
    settings = svc.settings
    runner = TurnRunner(
        host,
        host.store,
        turn,
        turn_id,
        LettaMapper(show_reasoning=body.enable_thinking),
        send,
        window=settings.throttle_window,
        leading=settings.throttle_leading,
        log_enabled=settings.resume,
        log_ttl=settings.letta_timeout + settings.log_keep,
        keep=settings.log_keep,
    )
    session = _session(svc, body.agent_id, turn_id, reader, resumed=False)
    session.attach_live(recv)
    host.start(body.agent_id, turn_id, runner.run)
    return _respond(svc, session, recv, session.render_live)


async def _resume(svc: Services, body: StreamRequest, position: FrameId) -> Response:
    host = svc.host
    meta = await host.store.log_meta(position.turn_id)
    if meta is None:
        raise NotResumable("this answer can no longer be resumed; send the message again")
    if meta.agent_id != body.agent_id:
        raise NotFound("stream position not found")  # another agent's turn: say no more than for none
    reader = new_id("conn")
    transition = await host.apply(body.agent_id, Adopt(position.turn_id, reader, host.owner, host.lease))
    session = _session(svc, body.agent_id, position.turn_id, reader, resumed=True)
    takeover = transition.first(TakeOver)
    if isinstance(takeover, TakeOver):
        session.start_takeover(takeover.run_id)
    svc.metrics.resumed()
    follow: tuple[HandoffSend[bytes], HandoffReceive[bytes]] = create_handoff(FOLLOW_BATCH)
    send, recv = follow
    return _respond(svc, session, recv, b"".join, pump=partial(pump, session.follow(position.seq), send))


def _session(svc: Services, agent_id: str, turn_id: str, reader: str, *, resumed: bool) -> StreamSession:
    settings = svc.settings
    return StreamSession(
        g.request_id,
        agent_id,
        turn_id,
        reader,
        svc.host,
        svc.metrics,
        grace=settings.resume_grace if settings.resume else 0.0,
        control=svc.control,
        letta_timeout=settings.letta_timeout,
        draining=svc.draining,
        resumed=resumed,
    )


def _respond(
    svc: Services,
    session: StreamSession,
    frames: HandoffReceive[T],
    render: Callable[[list[T]], bytes],
    pump: Pump | None = None,
) -> Response:
    """The SSE response: ``session``'s frames from ``frames``, with keepalives and a send timeout.

    The response's own task takes the frames and writes them (:class:`~app.stream_body.StreamBody`);
    ``pump``, for a resume, is the one task that reads the turn's log into ``frames``.
    """
    settings = svc.settings
    return stream_response(
        StreamBody(
            session,
            frames,
            render,
            keepalive=settings.keepalive_interval,
            send_timeout=settings.send_timeout,
            pump=pump,
        )
    )


@blueprint.post("/chat/cancel")
async def chat_cancel() -> tuple[dict[str, Any], int]:
    """Stop the agent's turn now (the stop button): its run is cancelled, even while nobody reads it."""
    svc = services()
    body = await json_body(CancelRequest)
    await _check_owner(svc, body.agent_id, body.user_id)
    await svc.host.apply(body.agent_id, Stop(body.run_id))
    svc.metrics.stopped()
    return {"agent_id": body.agent_id, "cancelling": True}, 202
