"""Everything one ``/chat/stream`` request owns besides its pipeline, and its end of life.

A session is created once the Letta turn is open and the agent claimed.  It sees
every event (through the pipeline's tap stage) to time the first one and to notice
an error, and its :meth:`StreamSession.finalize` — run exactly once by the response
body — releases the agent, counts the outcome, logs one line, and, if the pipeline
never started, closes the turn and gives it up.

Giving a turn up (:meth:`StreamSession.abandon`, also the pipeline's hook) means
cancelling its run — unless the turn is resumable and its client merely went away:
then it is detached (:mod:`app.detached`) and the agent stays claimed until the
client resumes or the grace period ends.
"""

from __future__ import annotations

import logging
import time

import anyio
import attrs

from pipeline.errors import ConsumerStalled
from pipeline.events import Done, Error, Keepalive
from pipeline.letta_turn import Abandon, LettaTurn

from .detached import DetachedTurns
from .metrics import StreamMetrics
from .turns import TurnGuard

log = logging.getLogger("letta_stream.stream")


@attrs.define
class StreamSession:
    request_id: str
    agent_id: str
    turn: LettaTurn
    guard: TurnGuard
    metrics: StreamMetrics
    cancel_timeout: float = 5.0
    cancel: Abandon | None = None
    """How to cancel the run (e.g. through the cancel queue); default: at once, inline."""
    detached: DetachedTurns | None = None
    """Where a resumable turn waits for its client; ``None``: never wait."""
    draining: anyio.Event | None = None
    resumed: bool = False
    started: float = attrs.field(factory=time.monotonic)
    first_event: float | None = None
    events: int = 0
    error_code: str | None = None
    ended: bool = False
    """A terminal event went out: the client has nothing to resume."""
    held: bool = False
    """The turn was detached: the agent stays claimed by :attr:`detached`."""

    def __attrs_post_init__(self) -> None:
        self.metrics.start()
        log.info(
            "stream %s request_id=%s agent_id=%s run_id=%s",
            "resume" if self.resumed else "start",
            self.request_id,
            self.agent_id,
            self.turn.run_id,
        )

    def observe(self, event: object) -> None:
        """Called for every event on its way out (the pipeline's tap stage)."""
        if isinstance(event, Keepalive):
            return
        self.events += 1
        if self.first_event is None:
            self.first_event = time.monotonic()
            self.metrics.ttfe.observe(self.first_event - self.started)
        if isinstance(event, Error):
            self.error_code = event.code
        if isinstance(event, (Done, Error)):
            self.ended = True

    async def abandon(self, turn: LettaTurn) -> None:
        """Give up a turn nobody reads to its end: detach it if its client may come back, else cancel it."""
        stopping = self.draining is not None and self.draining.is_set()
        if (
            self.detached is not None
            and turn.background
            and turn.run_id is not None
            and not self.ended
            and not stopping
            and self.detached.hold(turn.agent_id, turn.run_id)
        ):
            self.held = True
            return
        await (self.cancel or _cancel_now)(turn)

    async def finalize(self, entered: bool, error: BaseException | None) -> None:
        """The body is done: release the agent, count, log; clean up a turn that never streamed."""
        try:
            if not entered:
                with anyio.move_on_after(self.cancel_timeout):
                    await self.abandon(self.turn)
                    await self.turn.aclose()
        finally:
            if not self.held:
                self.guard.release(self.agent_id)
                if self.detached is not None:
                    self.detached.forget_stop(self.agent_id)
            outcome = self._outcome(entered, error)
            self.metrics.end(outcome)
            log.info(
                "stream end request_id=%s agent_id=%s run_id=%s outcome=%s detached=%s events=%d ttfe_ms=%s error=%s",
                self.request_id,
                self.agent_id,
                self.turn.run_id,
                outcome,
                self.held,
                self.events,
                None if self.first_event is None else round((self.first_event - self.started) * 1000, 1),
                self.error_code or (type(error).__name__ if error is not None else None),
            )

    def _outcome(self, entered: bool, error: BaseException | None) -> str:
        if not entered or isinstance(error, (anyio.get_cancelled_exc_class(), ConsumerStalled)):
            return "cancelled"
        if error is not None or self.error_code is not None:
            return "errored"
        return "finished"


async def _cancel_now(turn: LettaTurn) -> None:
    await turn.cancel_run()
