"""A source that pushes its items (``read_pushed``): read_source's contract, without a task step per item.

Order and nothing lost under backpressure (the source is paused while the sink is full, and what one
chunk still delivers after the pause waits its turn), the end, failures of the source and of the sink,
a halt, a cancellation — and the source is closed every time.  Under asyncio and trio.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from pipeline.events import Error
from pipeline.halt import Halt
from pipeline.source import read_pushed

from .fakes import FakePushing

pytestmark = pytest.mark.anyio


def as_error(exc: Exception) -> Error:
    return Error(str(exc), "upstream_failed")


async def test_every_item_in_order_through_a_slow_sink_with_the_source_paused_meanwhile() -> None:
    source = FakePushing()
    send, recv = anyio.create_memory_object_stream[Any](1)
    got: list[Any] = []
    finished: list[bool] = []

    async def read() -> None:
        finished.append(await read_pushed(source, send))

    async def slow_reader() -> None:
        async with recv:
            async for item in recv:
                got.append(item)
                await anyio.sleep(0.002)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        tg.start_soon(slow_reader)
        for chunk in range(20):  # three items a chunk: the sink declines within a chunk
            await source.deliver(*(chunk * 3 + i for i in range(3)))
        source.end()
    assert got == list(range(60))
    assert finished == [True]
    assert source.pauses > 0  # the sink was full: the source stopped delivering
    assert source.resumes >= source.pauses - 1  # and resumed once its backlog went out (not after the end)
    assert source.closed


async def test_a_source_failure_becomes_the_last_item_after_everything_before_it() -> None:
    source = FakePushing()
    send, recv = anyio.create_memory_object_stream[Any](10)
    async with anyio.create_task_group() as tg:
        result: list[bool] = []

        async def read() -> None:
            result.append(await read_pushed(source, send, on_error=as_error))

        tg.start_soon(read)
        await source.deliver("a", "b")
        source.end(ValueError("cut"))
    with recv:
        assert [recv.receive_nowait() for _ in range(3)] == ["a", "b", Error("cut", "upstream_failed")]
    assert result == [False]
    assert source.closed


async def test_without_on_error_a_source_failure_is_raised() -> None:
    source = FakePushing()
    send, recv = anyio.create_memory_object_stream[Any](10)

    async def fail() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_pushed, source, send)
            await source.deliver("a")
            source.end(ValueError("cut"))

    with recv, pytest.raises(ExceptionGroup) as raised:
        await fail()
    assert raised.group_contains(ValueError, match="cut")
    assert source.closed


async def test_a_sink_that_went_away_ends_the_reading_quietly_and_pauses_the_source() -> None:
    source = FakePushing()
    send, recv = anyio.create_memory_object_stream[Any](10)
    recv.close()
    result: list[bool] = []
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            result.append(await read_pushed(source, send, on_error=as_error))

        tg.start_soon(read)
        await source.deliver("a")
    assert result == [False]
    assert source.paused
    assert source.closed


async def test_a_halt_ends_the_reading_with_the_halt_item() -> None:
    source = FakePushing()
    halt = Halt()
    send, recv = anyio.create_memory_object_stream[Any](10)
    result: list[bool] = []
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            result.append(await read_pushed(source, send, halt=halt, on_halt=lambda: "halted"))

        tg.start_soon(read)
        await source.deliver("a")
        halt.set()
    with recv:
        assert [recv.receive_nowait() for _ in range(2)] == ["a", "halted"]
    assert result == [False]
    assert source.closed


async def test_cancelling_the_reader_closes_the_source() -> None:
    source = FakePushing()
    send, recv = anyio.create_memory_object_stream[Any](10)
    with recv:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_pushed, source, send)
            await source.deliver("a")
            tg.cancel_scope.cancel()
        assert recv.receive_nowait() == "a"
    assert source.closed


async def test_nothing_is_taken_after_the_end() -> None:
    source = FakePushing()
    send, recv = anyio.create_memory_object_stream[Any](10)
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_pushed, source, send)
        await source.deliver("a")
        source.end()
        source.take("late")  # a callback after the end (bytes after `data: [DONE]`) is ignored
    with recv:
        assert recv.receive_nowait() == "a"
        with pytest.raises(anyio.EndOfStream):
            recv.receive_nowait()
