"""Types shared by the stages, and the links between them.

A link is an anyio memory object stream.  A stage only uses its two ends the way a
memory object stream is used (``send``/``receive``, ``async for``, closing with
``with send, recv:``), so :mod:`pipeline.compose` may hand it ends that do more:

- :class:`BatchSend` / :class:`BatchReceive` carry *what is ready as one batch*.  When
  the consumer is waiting, an item goes to it at once, as through any link.  When the
  consumer is behind, further items ride along in the batch it has not taken yet (up to
  ``limit`` items, then the producer waits: backpressure), so a burst costs one hand-over
  instead of one per item, and the consumer still sees one item at a time.
- :class:`BatchReceive` may also run a pure :class:`~pipeline.compose.Step` (an
  event → events function, such as the Letta mapping or SSE encoding) on every item it
  takes: the step is *fused* into the consuming stage's task, with no task and no link
  of its own.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Protocol, TypeAlias

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .errors import ConsumerStalled


class ReceiveEnd(Protocol):
    """What a stage may do with the end it reads (a memory object receive stream has all of it)."""

    async def receive(self) -> Any: ...

    def receive_nowait(self) -> Any: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def __aiter__(self) -> Any: ...

    async def __anext__(self) -> Any: ...


class SendEnd(Protocol):
    """What a stage may do with the end it writes (a memory object send stream has all of it)."""

    async def send(self, item: Any) -> None: ...

    def send_nowait(self, item: Any) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


Receive: TypeAlias = ReceiveEnd
Send: TypeAlias = SendEnd

Source: TypeAlias = Callable[[Send], Coroutine[Any, Any, object]]
"""Produces items into ``send`` and closes it when done."""

Stage: TypeAlias = Callable[[Receive, Send], Coroutine[Any, Any, object]]
"""Reads ``recv`` until it ends, writes ``send``, and closes both when done."""


class Feed(Protocol):
    """A pure step: items in, items out, no I/O and no waiting (see :mod:`pipeline.compose`)."""

    def feed(self, item: Any) -> Iterable[Any]: ...

    def finish(self) -> Iterable[Any]: ...


_IDLE = object()


class _Batch(list[Any]):
    """Items handed over together; ``taken`` once the consumer has it (then nothing more joins it)."""

    __slots__ = ("taken",)

    def __init__(self, first: Any) -> None:
        super().__init__((first,))
        self.taken = False


class BatchSend:
    """The producer's end of a batching link (over a memory object stream of batches)."""

    def __init__(self, inner: MemoryObjectSendStream[Any], limit: int = 64, timeout: float | None = None) -> None:
        self._inner = inner
        self._limit = limit
        self._timeout = math.inf if timeout is None else timeout
        self._open: _Batch | None = None

    async def send(self, item: Any) -> None:
        """Hand ``item`` over; waits only when the consumer is a whole batch behind."""
        batch = self._open
        if batch is not None and not batch.taken and len(batch) < self._limit:
            batch.append(item)  # the consumer is behind: ride along with what it has not taken yet
            return
        batch = self._open = _Batch(item)
        try:
            self._inner.send_nowait(batch)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._open = None
            await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled flow ends by its cancellation, not this
            raise
        except anyio.WouldBlock:
            try:
                with anyio.move_on_after(self._timeout) as waited:
                    await self._inner.send(batch)
            except BaseException:
                self._open = None  # not delivered: nothing may join it
                raise
            if waited.cancelled_caught:
                self._open = None
                raise ConsumerStalled(f"no frame taken for {self._timeout} s") from None

    def send_nowait(self, item: Any) -> None:
        batch = self._open
        if batch is not None and not batch.taken and len(batch) < self._limit:
            batch.append(item)
            return
        batch = _Batch(item)
        self._inner.send_nowait(batch)
        self._open = batch

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        self._inner.close()

    def __enter__(self) -> BatchSend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class BatchReceive:
    """The consumer's end of a link: one item at a time, or all that is ready (:meth:`receive_ready`).

    ``batched`` says whether the link carries batches (from a :class:`BatchSend`) or single
    items; ``step`` is a fused pure step run on every item taken (and its ``finish()`` at the
    end of the stream).  With ``idle``, a wait longer than that yields ``on_idle()`` (through
    the step), as the keepalive stage does.  Cancelling a wait loses nothing: what was taken
    is kept here.
    """

    def __init__(
        self,
        inner: MemoryObjectReceiveStream[Any],
        *,
        batched: bool = True,
        step: Feed | None = None,
        idle: float | None = None,
        on_idle: Callable[[], Any] | None = None,
    ):
        self._inner = inner
        self._batched = batched
        self._step = step
        self._idle = idle
        self._on_idle = on_idle
        self._ready: deque[Any] = deque()
        self._ended = False

    def _take(self, got: Any) -> None:
        items: Iterable[Any]
        if self._batched:
            got.taken = True
            items = got
        else:
            items = (got,)
        step = self._step
        if step is None:
            self._ready.extend(items)
        else:
            for item in items:
                self._ready.extend(step.feed(item))

    def _end(self) -> None:
        self._ended = True
        if self._step is not None:
            self._ready.extend(self._step.finish())

    async def _fill(self) -> None:
        while not self._ready:
            if self._ended:
                raise anyio.EndOfStream
            try:
                if self._idle is None:
                    got = await self._inner.receive()
                else:
                    try:
                        got = self._inner.receive_nowait()  # no timer for what is there already
                    except anyio.WouldBlock:
                        got = _IDLE
                        with anyio.move_on_after(self._idle):  # a timer around one receive() loses nothing
                            got = await self._inner.receive()
                    if got is _IDLE:
                        assert self._on_idle is not None
                        one = self._on_idle()
                        self._ready.extend(self._step.feed(one) if self._step is not None else (one,))
                        continue
            except anyio.EndOfStream:
                self._end()
                continue
            self._take(got)

    async def receive(self) -> Any:
        if not self._ready:
            await self._fill()
        return self._ready.popleft()

    def receive_nowait(self) -> Any:
        while not self._ready:
            if self._ended:
                raise anyio.EndOfStream
            try:
                got = self._inner.receive_nowait()
            except anyio.EndOfStream:
                self._end()
                continue
            self._take(got)
        return self._ready.popleft()

    async def receive_ready(self, max_bytes: int | None = None) -> list[Any]:
        """Everything ready now (waiting for at least one item); :class:`anyio.EndOfStream` at the end.

        With ``max_bytes`` (for items that are ``bytes``), no more than that in total is
        taken (but always one item): the rest stays ready for the next call.
        """
        if not self._ready:
            await self._fill()
        try:  # a batch that arrived meanwhile rides along
            while not self._ended:
                self._take(self._inner.receive_nowait())
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            self._end()
        ready = self._ready
        if max_bytes is None:
            out = list(ready)
            ready.clear()
            return out
        out = [ready.popleft()]
        size = len(out[0])
        while ready and size + len(ready[0]) <= max_bytes:
            size += len(ready[0])
            out.append(ready.popleft())
        return out

    def close(self) -> None:
        self._ready.clear()
        self._inner.close()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> BatchReceive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> BatchReceive:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
