"""Halt: many readers ended at once, without a task each (asyncio and trio)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from pipeline.halt import Halt

pytestmark = pytest.mark.anyio


async def test_setting_the_halt_cancels_every_watching_scope_and_only_those() -> None:
    halt = Halt()
    ended: list[str] = []

    async def reader(name: str, watch: bool) -> None:
        if watch:
            with halt.watching() as scope:
                await anyio.sleep_forever()
            ended.append(f"{name} halted={scope.cancelled_caught}")
        else:
            await anyio.sleep(0.2)
            ended.append(f"{name} ran on")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(reader, f"r{i}", True)
            tg.start_soon(reader, "other", False)
            await anyio.sleep(0.05)
            assert halt.watchers == 3
            halt.set()
            halt.set()  # idempotent
    assert sorted(ended) == ["other ran on", "r0 halted=True", "r1 halted=True", "r2 halted=True"]
    assert halt.watchers == 0


async def test_a_halt_set_before_the_block_ends_it_at_its_first_wait() -> None:
    halt = Halt()
    halt.set()
    with anyio.fail_after(5), halt.watching() as scope:
        await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert halt.is_set()


async def test_a_block_that_ends_first_is_forgotten_and_never_cancelled() -> None:
    halt = Halt()
    with halt.watching() as scope:
        await anyio.lowlevel.checkpoint()
    assert halt.watchers == 0
    halt.set()
    assert not scope.cancel_called


async def test_an_outer_cancellation_still_propagates_through_a_watching_scope() -> None:
    halt = Halt()
    with anyio.move_on_after(0.05) as outer:
        with halt.watching() as inner:
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    assert halt.watchers == 0


async def test_other_watchers_are_cancelled_once_set_and_forgotten_when_discarded() -> None:
    class Watcher:
        def __init__(self) -> None:
            self.cancelled = 0

        def cancel(self) -> None:
            self.cancelled += 1

    halt = Halt()
    kept, dropped, late = Watcher(), Watcher(), Watcher()
    halt.add(kept)
    halt.add(dropped)
    halt.discard(dropped)
    halt.discard(Watcher())  # not watching: nothing happens
    assert halt.watchers == 1
    halt.set()
    assert (kept.cancelled, dropped.cancelled) == (1, 0)
    halt.add(late)  # the halt is set already: cancelled at once
    assert late.cancelled == 1
    await anyio.lowlevel.checkpoint()
