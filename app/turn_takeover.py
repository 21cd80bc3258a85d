"""Finishing a turn whose runner died (kill -9, OOM, a lost node) or stopped (drain), from Letta itself.

A foreground Letta run goes on when its client leaves, and Letta persists its messages
after every step, so a turn outlives the process that read it.  The process that
adopts such a turn (a client resuming it) becomes its owner and runs
:func:`take_over`: it waits (bounded) for the run to end, reads the run's messages
(``GET /v1/runs/{run_id}/messages``), and appends to the turn's log exactly what the
log has not delivered — the rest of the answer text, then ``done`` (or ``error``) —
so the resuming client, which follows the log, gets nothing twice and nothing lost.

The log's sequence numbers fence writers: if the old runner turns out to be alive
and appends first, our append fails with :class:`~app.store.LogConflict` and we
leave the turn to it.
"""

from __future__ import annotations

import logging

import anyio
import attrs
from letta_client import AsyncLetta
from letta_client.types.agents import AssistantMessage

from pipeline.events import Done, Error, Event, Text
from pipeline.sse import SSEEncoder

from .frame_ids import FrameId
from .store import LogConflict, LogFrame, TurnStore
from .turn_host import TurnHost
from .turn_log import logged_text
from .turn_machine import Finish

log = logging.getLogger(__name__)

FINISHED = frozenset({"completed", "failed", "cancelled"})
POLL_SECONDS = 0.5


@attrs.define(eq=False)
class TakeOver:
    """Finish ``turn_id`` of ``agent_id`` (Letta run ``run_id``) from Letta's record of the run."""

    host: TurnHost
    store: TurnStore
    client: AsyncLetta
    agent_id: str
    turn_id: str
    run_id: str | None
    wait_limit: float = 300.0
    """How long the run may still take (Letta's own turn limit)."""
    keep: float = 600.0

    async def run(self) -> None:
        frames = await self._whole_log()
        if frames and frames[-1].last:
            await self._finish()  # the runner had written the end: only the release was missing
            return
        ending = await self._ending(frames)
        seq = frames[-1].seq if frames else 0
        encoder = SSEEncoder(retry_ms=None)
        out = []
        for event in ending:
            seq += 1
            data = encoder.encode(attrs.evolve(event, cursor=str(FrameId(self.turn_id, seq))))
            out.append(LogFrame(seq, data, isinstance(event, (Done, Error))))
        try:
            await self.store.log_append(self.turn_id, out)
        except LogConflict:
            log.info("turn %s: its runner is alive after all; leaving it to it", self.turn_id)
            return
        await self.store.log_close(self.turn_id, self.keep)
        await self._finish()
        log.info("turn %s taken over: %d frames from run %s", self.turn_id, len(out), self.run_id)

    async def _whole_log(self) -> list[LogFrame]:
        frames: list[LogFrame] = []
        while True:
            batch = await self.store.log_read(self.turn_id, frames[-1].seq if frames else 0)
            if not batch:
                return frames
            frames.extend(batch)

    async def _ending(self, frames: list[LogFrame]) -> list[Event]:
        """The events that complete the turn after ``frames``."""
        if self.run_id is None:
            return [Error("The turn was interrupted before it started; please send your message again.", "incomplete")]
        status, stop_reason = await self._wait_for_end()
        if status not in FINISHED:
            return [Error("The agent is still answering; please try again in a moment.", "incomplete")]
        full = await self._answer_text()
        told = logged_text(frames)
        if not full.startswith(told):
            log.warning("turn %s: the log's text is not a prefix of run %s's answer", self.turn_id, self.run_id)
            told = full[: len(told)]
        events: list[Event] = []
        if full[len(told) :]:
            events.append(Text(full[len(told) :]))
        if status == "failed":
            events.append(
                Error(f"The agent stopped with an error ({stop_reason or 'failed'}).", stop_reason or "error")
            )
        else:
            events.append(Done(stop_reason or status, None, self.run_id))
        return events

    async def _wait_for_end(self) -> tuple[str | None, str | None]:
        assert self.run_id is not None
        status: str | None = None
        stop_reason: str | None = None
        with anyio.move_on_after(self.wait_limit):
            while True:
                run = await self.client.runs.retrieve(self.run_id)
                status = run.status
                stop_reason = run.stop_reason
                if status in FINISHED:
                    break
                await anyio.sleep(POLL_SECONDS)
        return status, stop_reason

    async def _answer_text(self) -> str:
        assert self.run_id is not None
        parts: list[str] = []
        async for message in self.client.runs.messages.list(self.run_id, order="asc", limit=1000):
            if isinstance(message, AssistantMessage):
                content = message.content
                parts.append(content if isinstance(content, str) else "".join(p.text for p in content))
        return "".join(parts)

    async def _finish(self) -> None:
        await self.host.apply_shielded(self.agent_id, Finish(self.turn_id, self.host.owner))
