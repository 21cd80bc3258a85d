"""The loop clock and the timed wake-up the throttle waits with (asyncio and trio)."""

from __future__ import annotations

import anyio
import pytest

from pipeline.timing import Wakeup, clock

pytestmark = pytest.mark.anyio


async def test_the_clock_is_anyios_clock() -> None:
    now = clock()
    before = anyio.current_time()
    got = now()
    after = anyio.current_time()
    assert before <= got <= after


async def test_a_timed_wait_runs_out_without_an_error_and_the_wake_up_still_works() -> None:
    wakeup = Wakeup()
    now = clock()
    began = now()
    await wakeup.wait(0.05)  # nobody sets it: it returns once the time is up
    assert now() - began >= 0.04
    assert not wakeup.is_set()

    async def setter() -> None:
        await anyio.sleep(0.02)
        wakeup.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(setter)
            began = now()
            await wakeup.wait(10)  # set long before the time is up
    assert now() - began < 5
    assert not wakeup.is_set()  # the mark it saw is used up


async def test_a_mark_set_before_the_wait_returns_at_once_and_only_once() -> None:
    wakeup = Wakeup()
    wakeup.set()
    with anyio.fail_after(1):
        await wakeup.wait()
    with anyio.move_on_after(0.05) as waited:
        await wakeup.wait()
    assert waited.cancelled_caught


async def test_cancelling_a_timed_wait_leaves_no_timer_that_fires_later() -> None:
    wakeup = Wakeup()
    with anyio.move_on_after(0.02):
        await wakeup.wait(0.05)
    await anyio.sleep(0.1)  # past the cancelled wait's own deadline
    assert not wakeup.is_set()


async def test_set_at_wakes_a_waiter_no_later_than_asked_and_a_sooner_time_wins(anyio_backend: str) -> None:
    wakeup = Wakeup()
    now = clock()
    began = now()
    wakeup.set_at(began + 5.0)
    wakeup.set_at(began + 0.05)  # sooner: this one counts
    wakeup.set_at(began + 3.0)  # later than what is asked already: nothing changes
    with anyio.fail_after(2):
        await wakeup.wait()  # no time of its own: only the mark ends it
    if anyio_backend == "asyncio":
        assert now() - began >= 0.04  # a loop timer: not before the time asked
    assert not wakeup.is_set()
    with anyio.move_on_after(0.1) as waited:  # the wait that returned cancelled what was pending
        await wakeup.wait()
    assert waited.cancelled_caught
