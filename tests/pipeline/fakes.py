"""In-memory sources that record how they were used."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import anyio
import anyio.lowlevel


class FakeStream:
    """An async iterable over ``items`` that counts pulls and records ``aclose``.

    ``fail_with`` is raised after the items; ``gate`` (if set) must be set before the
    first item is produced, so a test can hold the source idle.
    """

    def __init__(
        self,
        items: Iterable[Any],
        *,
        fail_with: Exception | None = None,
        gate: anyio.Event | None = None,
    ) -> None:
        self._items: Iterator[Any] = iter(items)
        self.fail_with = fail_with
        self.gate = gate
        self.pulled = 0
        self.closed = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Any:
        if self.gate is not None:
            await self.gate.wait()
        await anyio.lowlevel.checkpoint()
        try:
            item = next(self._items)
        except StopIteration:
            if self.fail_with is not None:
                raise self.fail_with from None
            raise StopAsyncIteration from None
        self.pulled += 1
        return item

    async def aclose(self) -> None:
        self.closed = True


def endless(item: Any) -> FakeStream:
    """A source that never ends."""
    return FakeStream(itertools.repeat(item))


class FakeTurn:
    """Stands in for :class:`pipeline.letta_turn.LettaTurn`: records close and cancel."""

    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.run_id: str | None = None
        self.closed = False
        self.cancelled = False

    async def chunks(self) -> Any:
        async for chunk in self.stream:
            self.run_id = self.run_id or getattr(chunk, "run_id", None)
            yield chunk

    def pushing(self) -> None:
        """Iterated, never pushing (:class:`FakePushing` stands for a pushing stream)."""
        return None

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()  # real closing does I/O: it must run shielded when the turn is cancelled
        self.closed = True

    async def cancel_run(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.cancelled = True


class FakePushing:
    """A source that pushes (:class:`pipeline.source.Pushing`), driven by the test with :meth:`deliver`.

    Like a connection: a :meth:`pause` stops later deliveries (:meth:`deliver` waits while paused),
    but the items of one delivery (one chunk of bytes) all go out, also after a pause inside it.
    """

    def __init__(self) -> None:
        self.take: Any = None
        self.on_end: Any = None
        self.started = anyio.Event()
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.closed = False
        self._resumed: anyio.Event | None = None

    def push(self, take: Any, on_end: Any) -> None:
        self.take, self.on_end = take, on_end
        self.started.set()

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False
        self.resumes += 1
        if self._resumed is not None:
            self._resumed.set()

    async def deliver(self, *items: Any) -> None:
        """Hand ``items`` over as one chunk, once the source is not paused (and the reader started)."""
        await self.started.wait()
        while self.paused:
            self._resumed = anyio.Event()
            await self._resumed.wait()
        for item in items:
            self.take(item)
        await anyio.lowlevel.checkpoint()

    def end(self, error: BaseException | None = None) -> None:
        self.on_end(error)

    async def aclose(self) -> None:
        self.closed = True
