"""The ``/chat/stream`` response body: one reader's frames, written from the response's own task.

Quart runs ``async with body: async for chunk in body: await send(chunk)`` in one task.
This body takes its frames straight from a :class:`~pipeline.handoff.HandoffReceive` —
fed by the turn's runner (a live reader) or by one pump task reading the turn's log (a
resume) — so a frame costs one wake-up of that task and one write: no task, link or
timer between the runner and the socket.  Everything pending goes out in one write.

What the body also does, without a task or a cancel scope per frame:

* **Keepalive.**  After ``keepalive`` seconds with nothing written, a comment
  (``: keepalive``) goes out, so proxies and the client see a live connection.
* **Send timeout.**  A write that has not finished after ``send_timeout`` seconds (a
  client that stopped reading) ends the response: the body calls the ``cancel_write`` hook
  that :class:`app.connection.StreamingConnection` gives it (which cancels the handler as a
  disconnect does), and the connection is closed without the response's end.  The stream
  counts as cancelled.  Only a write is ever cut short this way, never the body's release.
* **Drain.**  When the service drains, the stream ends with the comment
  :data:`~app.stream_session.RESTARTING` and no terminal event: the client resumes
  elsewhere.
* **Supersede.**  When another connection adopts the turn, this one ends quietly.

Both timers are one loop timer per body, armed for the earliest moment either could be
due and re-armed when it fires early, so a steady stream re-arms it about once per
``keepalive``.  Quart serves on asyncio only, and so does this body.

Ownership: the body owns the receive end (closed when the body is done), the pump task
(cancelled and awaited in ``__aexit__``), its registrations with the drain signal and
the turn host (removed in ``__aexit__``) and its timer, which also bounds Quart's last
write and is disarmed by :meth:`after_response` (the connection handler calls it after every
response).  :meth:`StreamSession.finalize` runs exactly once: after ``__aexit__``, or
from :meth:`after_response` when the body was never entered.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup
from quart import Response
from quart.wrappers.response import ResponseBody

from pipeline.errors import ConsumerStalled
from pipeline.handoff import HandoffReceive, HandoffSend
from pipeline.sse import KEEPALIVE_FRAME

from .sse_body import SSE_HEADERS
from .stream_session import RESTARTING, StreamSession

log = logging.getLogger(__name__)

T = TypeVar("T")

Pump = Callable[[], Coroutine[Any, Any, None]]
"""A task that feeds the body's hand-over (and closes its send end when done)."""


class _Ending:
    """What the drain signal and the turn host cancel: it ends the body with ``last`` (if any).

    The body and its endings refer to each other until the body is released (:meth:`detach`):
    then nothing of a finished stream waits for the garbage collector.
    """

    def __init__(self, body: StreamBody[Any], last: bytes) -> None:
        self._body: StreamBody[Any] | None = body
        self._last = last

    def cancel(self) -> None:
        if self._body is not None:
            self._body.end(self._last)

    def detach(self) -> None:
        self._body = None


class StreamBody(ResponseBody, Generic[T]):
    """One reader's SSE body: ``session``'s frames from ``frames``, rendered to bytes by ``render``."""

    def __init__(
        self,
        session: StreamSession,
        frames: HandoffReceive[T],
        render: Callable[[list[T]], bytes],
        *,
        keepalive: float,
        send_timeout: float,
        pump: Pump | None = None,
    ) -> None:
        self._session = session
        self._frames = frames
        self._render = render
        self._keepalive = keepalive
        self._send_timeout = send_timeout
        self._pump = pump
        self._tg: TaskGroup | None = None
        self._entered = False
        self._finalized = False
        self._opening: bytes | None = session.opening()
        self._last: bytes | None = None  # set by end(): what goes out before the body ends
        self._done = False
        self._writing = False
        self._mark = 0.0  # when the current write began, or when the last one ended
        self._keepalive_due = False
        self._stalled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained = _Ending(self, RESTARTING)  # the service drains: the client resumes elsewhere
        self._superseded = _Ending(self, b"")  # another connection adopted the turn: end quietly
        self.cancel_write: Callable[[], object] | None = None
        """Set by the connection handler: cancels the write in progress (the send timeout's effect)."""

    # ------------------------------------------------------------ Quart's side

    async def __aenter__(self) -> StreamBody[T]:
        self._entered = True
        self._loop = asyncio.get_running_loop()
        session = self._session
        try:
            if session.draining is not None:
                session.draining.add(self._drained)
            session.host.add_reader(session.reader, self._superseded)
            if self._pump is not None:
                self._tg = anyio.create_task_group()
                await self._tg.__aenter__()
                self._tg.start_soon(self._pump)
        except BaseException as exc:
            await self._release(exc)
            raise
        self._mark = self._loop.time()
        self._arm(self._mark + min(self._keepalive, self._send_timeout))
        return self

    async def __aexit__(  # type: ignore[override]  # Quart's `async with` honours a True return
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        error: BaseException | None = exc
        if self._stalled:
            error = ConsumerStalled(f"a write took longer than {self._send_timeout} s")
            log.info("stream closed: %s", error)
        swallowed = False
        try:
            if self._tg is not None:
                tg, self._tg = self._tg, None
                tg.cancel_scope.cancel()
                swallowed = bool(await tg.__aexit__(exc_type, exc, tb))
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._writing = False  # releasing writes nothing: the send timeout cannot end the handler meanwhile
            try:
                await self._release(error)
            finally:
                self._begin_write(b"")  # Quart's last write (the response's end) is under the send timeout too
        return swallowed

    def __aiter__(self) -> StreamBody[T]:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk to write: the opening, then every frame pending, a keepalive, or the drain comment."""
        assert self._loop is not None, "iterate the body inside `async with`"
        self._writing = False
        self._mark = self._loop.time()  # the previous write (if any) is done
        if self._opening is not None:
            chunk, self._opening = self._opening, None
            return self._begin_write(chunk)
        frames = self._frames
        while True:
            if self._done:
                raise StopAsyncIteration
            if self._last is not None:
                self._done = True
                if not self._last:
                    raise StopAsyncIteration
                return self._begin_write(self._last)
            try:
                items = frames.receive_nowait()
            except anyio.WouldBlock:
                items = None  # wait outside the handler: a wait inside it would hold the exception (and its frames)
            except anyio.EndOfStream:
                self._done = True
                raise StopAsyncIteration from None
            if items is None:
                if self._keepalive_due:
                    self._keepalive_due = False
                    return self._begin_write(KEEPALIVE_FRAME)
                await frames.wait()
                continue
            chunk = self._render(items)
            if self._session.ended:
                self._done = True  # the terminal frame: nothing after it
            return self._begin_write(chunk)

    # ------------------------------------------------------------ ending

    def end(self, last: bytes = b"") -> None:
        """End the stream after the write in progress, sending ``last`` first (if not empty).  Idempotent."""
        if self._last is None and not self._done:
            self._last = last
            self._frames.wake()

    async def after_response(self) -> None:
        """After the response (the connection handler calls it): stop the timer, and release what the
        body owns if it was never entered (the client left before it started)."""
        self._disarm()
        if not self._entered:
            await self._release(None)

    async def _release(self, error: BaseException | None) -> None:
        if self._finalized:
            return
        self._finalized = True
        self._frames.close()
        session = self._session
        if session.draining is not None:
            session.draining.discard(self._drained)
        session.host.discard_reader(session.reader, self._superseded)
        self._drained.detach()
        self._superseded.detach()
        with anyio.CancelScope(shield=True):
            await session.finalize(self._entered, error)

    # ------------------------------------------------------------ the timer

    def _begin_write(self, chunk: bytes) -> bytes:
        if self._loop is None:  # never entered: nothing is written
            return chunk
        self._writing = True
        self._mark = self._loop.time()
        due = self._mark + self._send_timeout
        if due < self._timer_at:  # only when the send timeout is shorter than the keepalive
            self._arm(due)
        return chunk

    def _arm(self, when: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._tick)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf

    def _tick(self) -> None:
        """The timer fired: a write that took too long ends the response; an idle wait gets a keepalive."""
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        if self._stalled:
            return
        if self._writing:
            due = self._mark + self._send_timeout
            if now >= due:
                self._stall()
                return
            due = min(due, now + self._keepalive)  # back by the time a keepalive may be due after this write
        else:
            due = self._mark + self._keepalive
            if now >= due:
                self._keepalive_due = True
                self._frames.wake()
                due = now + self._keepalive
        self._arm(due)

    def _stall(self) -> None:
        self._stalled = True
        self._timer_at = math.inf
        if self.cancel_write is not None:
            self.cancel_write()


def stream_response(body: StreamBody[Any]) -> Response:
    """A 200 ``text/event-stream`` response writing ``body``, with no time limit."""
    response = Response(body, 200, SSE_HEADERS)
    response.timeout = None  # Quart's default RESPONSE_TIMEOUT would cut the stream at 60 s
    return response


async def pump(chunks: AsyncIterator[bytes], send: HandoffSend[bytes]) -> None:
    """Feed ``chunks`` into ``send`` (a hand-over's send end) until they end; close both."""
    with send:
        try:
            async for chunk in chunks:
                try:
                    await send.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return  # the body is done with
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
