"""Cancelling Letta runs nobody reads any more, from a queue, a few at a time.

Closing a Letta stream does not end its run, so a stream the client leaves before
its end is followed by a cancel request.  Sent from each stream's own teardown, a burst of
disconnects (a class closing their laptops, a proxy restart) becomes thousands of
requests at once: the HTTP pool thrashes, per-request time limits fire while the
requests still wait for a connection, and most cancels never reach Letta.  Here a
stream only *submits* its run (instant, so teardown stays fast) and a fixed number
of workers send the cancels steadily, each with its own time limit.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from letta_client import AsyncLetta, omit

from pipeline.letta_turn import LettaTurn

log = logging.getLogger(__name__)


class CancelCounts(Protocol):
    """Where the queue's results are counted too (:class:`app.metrics.StreamMetrics`)."""

    def cancel(self, result: str) -> None: ...


@attrs.frozen
class RunRef:
    agent_id: str
    run_id: str | None


def _stream() -> tuple[MemoryObjectSendStream[RunRef], MemoryObjectReceiveStream[RunRef]]:
    return anyio.create_memory_object_stream[RunRef](10_000)


@attrs.define
class RunCanceller:
    """``submit`` runs to cancel; ``run`` (one task for the app's lifetime) sends the cancels.

    ``sent``/``failed``/``dropped`` count this queue's results; ``metrics``, when given,
    counts each result too (``metrics.cancel("sent")``).
    """

    client: AsyncLetta
    workers: int = 16
    request_timeout: float = 10.0
    metrics: CancelCounts | None = None
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    _queue: tuple[MemoryObjectSendStream[RunRef], MemoryObjectReceiveStream[RunRef]] = attrs.field(
        factory=_stream, init=False
    )

    def submit(self, agent_id: str, run_id: str | None) -> None:
        """Queue a cancel; never waits.  A full queue (10,000 pending) drops it, with a warning."""
        try:
            self._queue[0].send_nowait(RunRef(agent_id, run_id))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped += 1
            self._count("dropped")
            log.warning("cancel of Letta run %s not queued (queue full or closed)", run_id)

    async def queue(self, turn: LettaTurn) -> None:
        """Queue the cancel of ``turn``'s run: the pipeline's ``unfinished`` hook."""
        self.submit(turn.agent_id, turn.run_id)

    async def run(self, shutdown: Callable[[], Awaitable[object]]) -> None:
        """Send cancels until ``shutdown()`` returns, then those still queued, then return."""
        send, recv = self._queue
        async with anyio.create_task_group() as tg:
            for _ in range(self.workers):
                tg.start_soon(self._work, recv)
            await shutdown()
            send.close()

    async def _work(self, recv: MemoryObjectReceiveStream[RunRef]) -> None:
        async for ref in recv:
            try:
                await self.client.agents.messages.cancel(
                    ref.agent_id,
                    run_ids=[ref.run_id] if ref.run_id else omit,
                    timeout=self.request_timeout,
                )
                self.sent += 1
                self._count("sent")
            except Exception as exc:  # one failed cancel must not stop the others
                self.failed += 1
                self._count("failed")
                log.warning("cancelling Letta run %s failed: %r", ref.run_id, exc)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cancel(result)
