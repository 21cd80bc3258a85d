"""Everything one ``/chat/stream`` request owns besides its pipeline, and its end of life.

A session is created once the Letta turn is open and the agent claimed.  It sees
every event (through the pipeline's tap stage) to time the first one and to notice
an error, and its :meth:`StreamSession.finalize` — run exactly once by the response
body — releases the agent, counts the outcome, logs one line, and, if the pipeline
never started, closes the turn and cancels its run.
"""

from __future__ import annotations

import logging
import time

import anyio
import attrs

from pipeline.errors import ConsumerStalled
from pipeline.events import Error, Keepalive
from pipeline.letta_turn import Abandon, LettaTurn

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
    abandon: Abandon | None = None
    """How to give up the turn if the pipeline never started (default: cancel its run now)."""
    started: float = attrs.field(factory=time.monotonic)
    first_event: float | None = None
    events: int = 0
    error_code: str | None = None

    def __attrs_post_init__(self) -> None:
        self.metrics.start()
        log.info("stream start request_id=%s agent_id=%s", self.request_id, self.agent_id)

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

    async def finalize(self, entered: bool, error: BaseException | None) -> None:
        """The body is done: release the agent, count, log; clean up a turn that never streamed."""
        try:
            if not entered:
                with anyio.move_on_after(self.cancel_timeout):
                    await (self.abandon or _cancel_now)(self.turn)
                    await self.turn.aclose()
        finally:
            self.guard.release(self.agent_id)
            outcome = self._outcome(entered, error)
            self.metrics.end(outcome)
            log.info(
                "stream end request_id=%s agent_id=%s run_id=%s outcome=%s events=%d ttfe_ms=%s error=%s",
                self.request_id,
                self.agent_id,
                self.turn.run_id,
                outcome,
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
