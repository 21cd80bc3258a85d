"""Running one turn: Letta's stream → events → frames, into the turn's log and to the live client.

The runner is the turn's single writer.  It reads the turn from Letta (foreground
mode: token deltas as Letta makes them) through the pipeline's stages — source →
filter → throttle — then numbers each outgoing event, encodes it once as an SSE
frame with the id ``<turn id>:<seq>``, appends the frame to the turn's log (batched,
never waited for) and hands it to the live client, if one is attached.

* The live client is a hand-over (:mod:`pipeline.handoff`) of one batch: while the client reads
  slowly the throttle merges text (backpressure); when the client goes away the
  runner just hands no more frames out and goes on logging — the turn keeps running
  for a resume (the grace period is the turn machine's, not the runner's).
* The runner never cancels the run: cancelling is an effect of the turn machine
  (stop button, grace over).  When its process shuts down, the turn is handed off.
* It owns the Letta stream (closed when it ends, whatever ends it), the live send
  end (closed) and the log writer (flushed, then the log is kept ``keep`` seconds);
  after the last frame is in the log the agent is released (``Finish``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import anyio
import attrs
from anyio.abc import TaskGroup

from pipeline.compose import run_flow
from pipeline.events import TERMINAL_TYPES, Event, Keepalive
from pipeline.flag import Flag
from pipeline.halt import Halt
from pipeline.handoff import HandoffSend
from pipeline.letta_map import LettaMapper
from pipeline.letta_turn import LettaTurn, letta_source
from pipeline.sse import SSEEncoder
from pipeline.throttle import Throttle

from .frame_ids import FrameId
from .store import LogFrame, LogMeta, TurnStore
from .turn_host import TurnHost
from .turn_log import LogWriter
from .turn_machine import Finish, Started

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
"""How long the log's last frames may take to reach the store once the turn ended."""


async def _keep_running(turn: LettaTurn) -> None:
    """A runner that ends early (lost, handed off) leaves the run to whoever takes the turn over: no cancel here."""


class TurnFramer:
    """A pure step: numbers a turn's outgoing events and encodes each once as an SSE frame with its id.

    Letta's pings say nothing and get no number (each connection keeps itself alive).
    The terminal event's frame is marked ``last``.  The id goes to the encoder as is (no
    copy of the event per frame); a turn id that cannot be part of an SSE id is refused
    when the framer is made, before the turn streams anything.
    """

    def __init__(self, turn_id: str, seq: int = 0) -> None:
        self.turn_id = turn_id
        self.seq = seq
        self._encoder = SSEEncoder(retry_ms=None)
        if any(c in turn_id for c in "\r\n\0"):
            raise ValueError(f"a turn id cannot be part of an SSE id: {turn_id!r}")

    def feed(self, event: Event) -> list[LogFrame]:
        if isinstance(event, Keepalive):
            return []
        self.seq = seq = self.seq + 1
        data = self._encoder.encode(event, id=str(FrameId(self.turn_id, seq)))
        return [LogFrame(seq, data, isinstance(event, TERMINAL_TYPES))]

    def finish(self) -> list[LogFrame]:
        return []


class _Handout:
    """The runner's sink: each event framed once, appended to the log, handed to the live client.

    ``send_nowait`` takes an event only when its frame can go on at once (the live client
    is waiting, or nobody reads live); otherwise it declines (:class:`anyio.WouldBlock`)
    and the event waits in the throttle, which merges text meanwhile.  The terminal
    frame is logged but kept as ``last`` (the runner hands it out after the agent is
    released) and ``on_last`` is called; anything after it is dropped.
    """

    def __init__(self, runner: TurnRunner, framer: TurnFramer, on_last: Callable[[], object]) -> None:
        self._runner = runner
        self._framer = framer
        self._on_last = on_last
        self.last: LogFrame | None = None

    def _frames(self, event: Event) -> list[LogFrame]:
        """``event``'s frames, logged; the terminal one is kept back."""
        if self.last is not None:
            return []
        frames = self._framer.feed(event)
        runner = self._runner
        runner.seq = self._framer.seq
        if not frames:
            return frames
        if runner.writer is not None:
            runner.writer.extend(frames)
        if frames[-1].last:
            self.last = frames.pop()
            self._on_last()
        return frames

    def send_nowait(self, event: Event) -> None:
        live = self._runner.live
        if live is not None and self.last is None and not live.ready():
            raise anyio.WouldBlock
        frames = self._frames(event)
        if frames and live is not None:
            try:
                live.send_nowait(frames)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._runner.live = None  # the client went away; its connection reports the detach

    def call_when_ready(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once :meth:`send_nowait` would take an event (the live client took its
        batch, or left); at once if it would now.  What lets the throttle's writer run without a task."""
        live = self._runner.live
        if live is None or self.last is not None:
            callback()
        else:
            live.call_when_ready(callback)

    async def send(self, event: Event) -> None:
        frames = self._frames(event)
        if frames and self._runner.live is not None:
            await self._runner._hand_out(frames)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Handout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@attrs.define(eq=False)
class TurnRunner:
    """One turn's runner.  ``live`` is the attached client's end (``None``: nobody reads live)."""

    host: TurnHost
    store: TurnStore
    turn: LettaTurn
    turn_id: str
    mapper: LettaMapper
    live: HandoffSend[list[LogFrame]] | None
    window: float = 0.05
    leading: bool = True
    """The throttle's leading edge (:class:`~pipeline.coalesce.Coalescer`)."""
    log_enabled: bool = True
    log_ttl: float = 3600.0
    """How long the log may live while the turn runs (longer than any turn)."""
    keep: float = 600.0
    """How long the log is kept once the turn ended."""
    seq: int = 0
    writer: LogWriter | None = None

    async def run(self) -> None:
        """Run the turn to its end (or until cancelled); always closes what it owns.

        At the end the log is flushed and the agent released (``Finish``) *before* the
        terminal frame goes to the live client, so a student who sends the next message
        the moment the answer is done is never refused, and a resume never finds a
        released turn whose log lacks its end.  A runner cancelled before the end leaves
        the turn to be taken over.
        """
        meta = LogMeta(self.turn_id, self.turn.agent_id)
        # the log is opened by the writer's task: reading Letta never waits for the store
        self.writer = LogWriter(self.store, self.turn_id, opening=(meta, self.log_ttl)) if self.log_enabled else None
        last: LogFrame | None = None
        try:
            async with anyio.create_task_group() as tg:
                if self.writer is not None:
                    tg.start_soon(self.writer.run)
                last = await self._pump(tg)
                if self.writer is not None:
                    self.writer.close()
                tg.cancel_scope.deadline = anyio.current_time() + FLUSH_SECONDS  # the log's last batch, bounded
            with anyio.CancelScope(shield=True):
                await self._flush()
                if last is not None:
                    await self.host.apply_shielded(self.turn.agent_id, Finish(self.turn_id, self.host.owner))
            if last is not None and self.live is not None:
                await self._hand_out([last])
        finally:
            if self.live is not None:
                self.live.close()
            if last is None:
                with anyio.CancelScope(shield=True):
                    await self._flush()

    async def _pump(self, tg: TaskGroup) -> LogFrame | None:
        """Frames out until the turn's terminal event; that frame (logged, not yet handed out), if reached.

        One flow, no task of its own: the source (in this task) maps each chunk and pushes the
        events into the throttle, whose writer runs on loop callbacks (the handout says when
        the live client can take a frame: :meth:`_Handout.call_when_ready`) and writes into a
        :class:`_Handout`, which frames, logs and hands out each event — and takes an event
        that is due at once straight from the source when the live client can take its frame
        at once.
        """
        # the run id goes to the turn's record as soon as Letta names it — in a ping, before any output.  It
        # may be named in a loop callback (a pushing stream), where no task can be started: a task waits for it
        named: list[str] = []
        noted = Flag()
        if self.turn.run_id is None:

            def on_run(run_id: str) -> None:
                named.append(run_id)
                noted.set()

            self.turn.on_run = on_run
            tg.start_soon(self._record_run, named, noted)
        source = partial(letta_source, self.turn, unfinished=_keep_running)
        reading = Halt()  # the terminal frame ends the reading (the flow's own scope: no scope of ours)
        handout = _Handout(self, TurnFramer(self.turn_id, self.seq), on_last=reading.set)
        try:
            await run_flow(source, self.mapper, Throttle(self.window, leading=self.leading), sink=handout, halt=reading)
        finally:
            noted.set()  # a turn that never named its run: the waiting task ends
        return handout.last

    async def _hand_out(self, frames: list[LogFrame]) -> None:
        assert self.live is not None
        try:
            await self.live.send(frames)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.live = None  # the client went away; its connection reports the detach

    async def _record_run(self, named: list[str], noted: Flag) -> None:
        """Once the run is named (``noted``), record it (:meth:`_started`)."""
        await noted.wait()
        if named:
            await self._started(named[0])

    async def _started(self, run_id: str) -> None:
        try:
            await self.host.apply(self.turn.agent_id, Started(self.turn_id, run_id))
        except Exception as exc:  # the turn goes on; a stop before this lands cancels the agent's latest run
            log.warning("recording run %s of turn %s failed: %r", run_id, self.turn_id, exc)

    async def _flush(self) -> None:
        """Write what the log writer still holds (bounded), then keep the log ``keep`` seconds."""
        if self.writer is None:
            return
        self.writer.close()
        with anyio.move_on_after(FLUSH_SECONDS):
            await self.writer.run()
        try:
            await self.store.log_close(self.turn_id, self.keep)
        except Exception as exc:
            log.warning("closing the log of turn %s failed: %r", self.turn_id, exc)
