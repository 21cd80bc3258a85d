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

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()  # real closing does I/O: it must run shielded when the turn is cancelled
        self.closed = True

    async def cancel_run(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.cancelled = True
