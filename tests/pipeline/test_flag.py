"""``Flag``: anyio.Event's contract for one waiter, under asyncio and trio."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from pipeline.flag import Flag

pytestmark = pytest.mark.anyio


async def test_a_wait_returns_once_set_from_another_task() -> None:
    flag = Flag()
    woke: list[bool] = []

    async def waiter() -> None:
        await flag.wait()
        woke.append(flag.is_set())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert woke == []  # still waiting: nothing set it
        flag.set()
        flag.set()  # idempotent
    assert woke == [True]


async def test_a_set_flag_stays_set_and_its_wait_is_a_checkpoint() -> None:
    flag = Flag()
    flag.set()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await flag.wait()  # a checkpoint: the cancelled scope ends it here
        pytest.fail("a wait on a set flag did not checkpoint")
    assert scope.cancelled_caught
    await flag.wait()
    assert flag.is_set()


async def test_a_cancelled_wait_leaves_the_flag_usable() -> None:
    flag = Flag()
    with anyio.move_on_after(0.01) as scope:
        await flag.wait()
    assert scope.cancelled_caught
    assert not flag.is_set()

    async def later() -> None:
        await anyio.lowlevel.checkpoint()
        flag.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        with anyio.fail_after(5):
            await flag.wait()


async def test_a_second_concurrent_waiter_is_refused() -> None:
    flag = Flag()
    async with anyio.create_task_group() as tg:
        tg.start_soon(flag.wait)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.BusyResourceError):
            await flag.wait()
        flag.set()
