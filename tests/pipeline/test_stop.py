"""Stop: many readers stopped at once, without a task each (asyncio and trio)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from pipeline.stop import Stop

pytestmark = pytest.mark.anyio


async def test_setting_the_stop_cancels_every_watching_scope_and_only_those() -> None:
    stop = Stop()
    ended: list[str] = []

    async def reader(name: str, watch: bool) -> None:
        if watch:
            with stop.watching() as scope:
                await anyio.sleep_forever()
            ended.append(f"{name} stopped={scope.cancelled_caught}")
        else:
            await anyio.sleep(0.2)
            ended.append(f"{name} ran on")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(reader, f"r{i}", True)
            tg.start_soon(reader, "other", False)
            await anyio.sleep(0.05)
            assert stop.watchers == 3
            stop.set()
            stop.set()  # idempotent
    assert sorted(ended) == ["other ran on", "r0 stopped=True", "r1 stopped=True", "r2 stopped=True"]
    assert stop.watchers == 0


async def test_a_stop_set_before_the_block_ends_it_at_its_first_wait() -> None:
    stop = Stop()
    stop.set()
    with anyio.fail_after(5), stop.watching() as scope:
        await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert stop.is_set()


async def test_a_block_that_ends_first_is_forgotten_and_never_cancelled() -> None:
    stop = Stop()
    with stop.watching() as scope:
        await anyio.lowlevel.checkpoint()
    assert stop.watchers == 0
    stop.set()
    assert not scope.cancel_called


async def test_an_outer_cancellation_still_propagates_through_a_watching_scope() -> None:
    stop = Stop()
    with anyio.move_on_after(0.05) as outer:
        with stop.watching() as inner:
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    assert stop.watchers == 0


async def test_other_watchers_are_cancelled_once_set_and_forgotten_when_discarded() -> None:
    class Watcher:
        def __init__(self) -> None:
            self.cancelled = 0

        def cancel(self) -> None:
            self.cancelled += 1

    stop = Stop()
    kept, dropped, late = Watcher(), Watcher(), Watcher()
    stop.add(kept)
    stop.add(dropped)
    stop.discard(dropped)
    stop.discard(Watcher())  # not watching: nothing happens
    assert stop.watchers == 1
    stop.set()
    assert (kept.cancelled, dropped.cancelled) == (1, 0)
    stop.add(late)  # the stop is set already: cancelled at once
    assert late.cancelled == 1
    await anyio.lowlevel.checkpoint()
