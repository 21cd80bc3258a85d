"""One ``/chat/stream`` connection: a client reading a turn (its *reader*), and its end of life.

A session is the client's side of a turn, never the turn itself: the turn runs in its
runner (:mod:`app.turn_runner`), which outlives the connection.  A session reads the
turn's frames either *live* from the runner of this process (no store round trip on
the hot path) or from the turn's *log* (a resume, on any replica), and ends when the
terminal frame went out, when the client leaves, or when the service drains.  The
session is what the stream *means* (opening, counting, following the log, its end of
life); :mod:`app.stream_body` does the writing, the timers and the endings.

* The first frame goes out at once: ``retry:`` and, for a new turn, the id
  ``<turn id>:0`` — so even a stream dropped before any answer can resume.
* Following the log, it watches the turn's record: when the owner's lease ran out
  (its process died), it adopts the turn again, which makes this process take it
  over; when another connection adopted the turn, it ends.
* :meth:`StreamSession.finalize` runs exactly once (the response body calls it): a
  client that left before the terminal frame *detaches* (the turn waits ``grace``
  seconds for a resume, or is cancelled at once when resume is off); then the
  session counts its outcome and logs one line.
* When the service drains, the stream ends without a terminal event (the comment
  :data:`RESTARTING` says why): the client resumes through another replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import anyio
import attrs
from letta_client import AsyncLetta

from pipeline.errors import ConsumerStalled
from pipeline.events import Error
from pipeline.halt import Halt
from pipeline.handoff import HandoffReceive
from pipeline.sse import SSEEncoder

from .frame_ids import FrameId
from .metrics import StreamMetrics
from .store import LogFrame, LogGone
from .turn_host import TurnHost
from .turn_machine import Adopt, Detach, TakeOver
from .turn_takeover import TakeOver as TakeOverTurn

log = logging.getLogger("letta_stream.stream")

RETRY_MS: Final = 3000
RESTARTING: Final = b": the service is restarting; reconnect with Last-Event-ID to continue\n\n"
FOLLOW_WAIT: Final = 1.0
"""How long a log read waits before the session checks that the turn is still served."""


@attrs.define(eq=False)
class StreamSession:
    request_id: str
    agent_id: str
    turn_id: str
    reader: str
    host: TurnHost
    metrics: StreamMetrics
    grace: float
    """How long the turn waits for this client to come back (0: cancel it when the client leaves)."""
    control: AsyncLetta | None = None
    """The client a takeover reads Letta's run with."""
    letta_timeout: float = 300.0
    draining: Halt | None = None
    resumed: bool = False
    started: float = attrs.field(factory=time.monotonic)
    first_event: float | None = None
    frames: int = 0
    ended: bool = False
    """The terminal frame went out: the client has nothing to resume."""
    error_code: str | None = None
    _live: HandoffReceive[list[LogFrame]] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.metrics.start()
        log.info(
            "stream %s request_id=%s agent_id=%s turn_id=%s",
            "resume" if self.resumed else "start",
            self.request_id,
            self.agent_id,
            self.turn_id,
        )

    # ------------------------------------------------------------ frames

    def opening(self) -> bytes:
        """The stream's first chunk: ``retry:`` and, for a new turn, the id ``<turn id>:0``."""
        head = b"retry: %d\n" % RETRY_MS
        if not self.resumed:
            head += f"id: {FrameId(self.turn_id, 0)}\n".encode()
        return head + b": keepalive\n\n"

    def _note(self, frame: LogFrame) -> None:
        self.frames += 1
        if self.first_event is None:
            self.first_event = time.monotonic()
            self.metrics.first_event(self.first_event - self.started)
        if frame.last:
            self.ended = True
            if b"event: error" in frame.data[:200]:
                self.error_code = "error"

    def attach_live(self, recv: HandoffReceive[list[LogFrame]]) -> None:
        """Read the runner's frames from ``recv`` (owned now: closed by :meth:`finalize` at the latest)."""
        self._live = recv

    def render_live(self, batches: list[list[LogFrame]]) -> bytes:
        """The runner's batches as one chunk, each frame counted (the terminal one marks the session ended)."""
        data = []
        for batch in batches:
            for frame in batch:
                self._note(frame)
                data.append(frame.data)
        return data[0] if len(data) == 1 else b"".join(data)

    async def follow(self, after: int) -> AsyncIterator[bytes]:
        """The turn's log after frame ``after``, then live from the log until the terminal frame.

        Whenever it is caught up, it checks (at once the first time, then every
        :data:`FOLLOW_WAIT` seconds) that the turn is still served — else it is over, or
        its owner died and this process takes it over — and otherwise waits on the log.
        (The opening, :meth:`opening`, is the body's to send.)
        """
        store = self.host.store
        wait = 0.0  # the first empty read checks the turn at once: a resume after the end must not wait
        while True:
            try:
                batch = await store.log_read(self.turn_id, after, wait=wait)
            except LogGone:
                yield self._error("This answer can no longer be resumed; please send your message again.")
                return
            for frame in batch:
                after = frame.seq
                self._note(frame)
                yield frame.data
                if frame.last:
                    return
            if batch:
                continue
            if await self._still_served(after):
                wait = FOLLOW_WAIT
                continue
            if await store.log_read(self.turn_id, after):
                continue  # over, and its last frames came in meanwhile
            if not await self._had_the_end(after):
                yield self._error("The answer was interrupted; please send your message again.")
            return

    async def _still_served(self, after: int) -> bool:
        """Whether frames may still come: the turn is live, or this process just took it over."""
        store = self.host.store
        record = await store.record(self.agent_id)
        if record is None or record.turn_id != self.turn_id:
            return False  # over: its last frames are in the log already
        if record.owned(await store.clock()):
            return True
        transition = await self.host.apply(
            self.agent_id, Adopt(self.turn_id, self.reader, self.host.owner, self.host.lease)
        )
        takeover = transition.first(TakeOver)
        if isinstance(takeover, TakeOver):
            self.start_takeover(takeover.run_id)
        return True

    async def _had_the_end(self, seq: int) -> bool:
        """Whether frame ``seq`` — the client's last — ended the turn (a resume after the end gets nothing)."""
        if seq <= 0:
            return False
        frames = await self.host.store.log_read(self.turn_id, seq - 1, limit=1)
        if frames and frames[0].seq == seq and frames[0].last:
            self.ended = True
            return True
        return False

    def start_takeover(self, run_id: str | None) -> None:
        """This process now owns the turn: finish it from Letta's record of the run."""
        assert self.control is not None, "a takeover needs a Letta client"
        work = TakeOverTurn(
            self.host, self.host.store, self.control, self.agent_id, self.turn_id, run_id, wait_limit=self.letta_timeout
        )
        self.host.start(self.agent_id, self.turn_id, work.run)

    def _error(self, message: str) -> bytes:
        self.ended = True
        self.error_code = "incomplete"
        return SSEEncoder(retry_ms=None).encode(Error(message, "incomplete"))

    # ------------------------------------------------------------ end of life

    async def finalize(self, entered: bool, error: BaseException | None) -> None:
        """The body is done: detach from an unfinished turn, count, log.  Runs once, shielded."""
        if self._live is not None:
            self._live.close()  # a runner handing frames to a client that never came stops waiting
        if not self.ended:
            await self.host.apply_shielded(self.agent_id, Detach(self.turn_id, self.reader, self.grace))
        outcome = self._outcome(entered, error)
        self.metrics.end(outcome)
        log.info(
            "stream end request_id=%s agent_id=%s turn_id=%s outcome=%s frames=%d ttfe_ms=%s error=%s",
            self.request_id,
            self.agent_id,
            self.turn_id,
            outcome,
            self.frames,
            None if self.first_event is None else round((self.first_event - self.started) * 1000, 1),
            self.error_code or (type(error).__name__ if error is not None else None),
        )

    def _outcome(self, entered: bool, error: BaseException | None) -> str:
        if not entered or not self.ended or isinstance(error, (anyio.get_cancelled_exc_class(), ConsumerStalled)):
            return "cancelled"
        if error is not None or self.error_code is not None:
            return "errored"
        return "finished"
