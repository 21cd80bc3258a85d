"""Opening a turn for ``/chat/stream``: a new one (resumable when Letta can), or the rest of a dropped one.

Claiming the agent comes first and decides which: a new message claims a free
agent (a detached turn that Letta reports finished no longer counts as busy); a
resume adopts the detached turn it names, or — if this service never held it (it
restarted, or the old connection has not noticed yet) — checks with Letta that
the run is that agent's before reading it again.
"""

from __future__ import annotations

import logging

import anyio
from letta_client import APIStatusError, AsyncLetta

from pipeline.cursor import Cursor
from pipeline.letta_turn import LettaTurn, resume_turn, start_turn

from .bodies import StreamRequest
from .errors import NotFound, NotResumable, UpstreamUnavailable
from .services import Services
from .turns import TurnInProgress
from .upstream import letta_errors

log = logging.getLogger(__name__)

FINISHED = frozenset({"completed", "failed", "cancelled"})
ADOPT_WAIT = 2.0
"""Seconds a resume waits for the dropped connection's stream to notice it is gone."""
REOPEN_LIMIT = 30.0
"""Seconds to reopen a run.  Letta answers only with the first chunk after the position (or its
first keepalive ping, 20 s in); a run whose chunks Redis no longer has would never answer."""


async def claim_agent(svc: Services, agent_id: str) -> None:
    """Claim ``agent_id`` for a new turn, or raise :class:`TurnInProgress`."""
    detached = svc.detached
    if svc.guard.busy(agent_id) and detached is not None:
        run_id = detached.held_run(agent_id)
        if run_id is not None and await _run_status(svc, run_id) in FINISHED:
            detached.release(agent_id, run_id)  # its client never came back, but it is over: not busy
    _claim(svc, agent_id)
    if detached is not None:
        detached.forget_stop(agent_id)


async def claim_for_resume(svc: Services, agent_id: str, position: Cursor) -> None:
    """Claim ``agent_id`` to resume its run ``position.run_id``, or raise 404/409."""
    if await _adopt(svc, agent_id, position.run_id):
        svc.metrics.resumed += 1
        return
    async with letta_errors("stream position"):
        run = await _control(svc).runs.retrieve(position.run_id)
    if run.agent_id != agent_id:
        raise NotFound("stream position not found")  # another agent's run: say no more than for none
    if run.background is False:
        raise NotResumable("this turn was not streamed resumably; send the message again")
    _claim(svc, agent_id)
    svc.metrics.resumed += 1


def _claim(svc: Services, agent_id: str) -> None:
    try:
        svc.guard.claim(agent_id)
    except TurnInProgress:
        svc.metrics.refused_busy += 1
        raise


async def _adopt(svc: Services, agent_id: str, run_id: str) -> bool:
    """Take over the detached turn ``run_id``; if its old stream is still attached, wait (bounded) for it to let go."""
    detached = svc.detached
    if detached is None:
        return False
    with anyio.move_on_after(ADOPT_WAIT):
        while svc.guard.busy(agent_id):
            if detached.adopt(agent_id, run_id):
                return True
            await anyio.sleep(0.02)  # the old connection's stream detaches as soon as it notices the drop
    return False


async def open_turn(svc: Services, body: StreamRequest) -> LettaTurn:
    """Start the turn, in background mode unless Letta cannot (then remember that and start it plainly)."""
    client = svc.stream_client()
    async with letta_errors():
        if svc.resume:
            try:
                return await _start(svc, client, body, background=True)
            except APIStatusError as exc:
                if exc.status_code != 503 or "redis" not in str(exc.message).lower():
                    raise
                if svc.resume:  # say it once, not once per stream that raced to find out
                    log.warning("Letta has no Redis, so streams cannot resume; streaming without: %s", exc.message)
                svc.resume = False
        return await _start(svc, client, body, background=False)


async def reopen_turn(svc: Services, agent_id: str, position: Cursor) -> LettaTurn:
    """The rest of run ``position.run_id`` after ``position.seq``."""
    with anyio.move_on_after(REOPEN_LIMIT):
        async with letta_errors("stream position"):
            try:
                return await resume_turn(svc.stream_client(), agent_id, position, control=svc.control)
            except APIStatusError as exc:  # 400: not a background run; 410: older than Letta's 3 h horizon
                if exc.status_code in (400, 410):
                    raise NotResumable("this turn can no longer be resumed; send the message again") from exc
                raise
    raise UpstreamUnavailable("the agent server did not reopen the turn; send the message again")


async def _start(svc: Services, client: AsyncLetta, body: StreamRequest, *, background: bool) -> LettaTurn:
    return await start_turn(
        client,
        body.agent_id,
        body.message,
        stream_tokens=body.stream_tokens,
        thinking=body.enable_thinking,
        control=svc.control,
        background=background,
    )


async def _run_status(svc: Services, run_id: str) -> str | None:
    try:
        run = await _control(svc).runs.retrieve(run_id, timeout=5.0)
    except Exception as exc:  # unknown: keep treating the agent as busy
        log.warning("could not read the status of run %s: %r", run_id, exc)
        return None
    return run.status


def _control(svc: Services) -> AsyncLetta:
    return svc.control or svc.client
