"""The hand-over between a turn's runner and its HTTP body (asyncio and trio): order, backpressure,
both ways of closing, a wake-up that ends a wait, and no checkpoint when nothing has to wait."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from pipeline.handoff import HandoffReceive, HandoffSend, create_handoff

pytestmark = pytest.mark.anyio


def pair(limit: int = 1) -> tuple[HandoffSend[int], HandoffReceive[int]]:
    return create_handoff(limit)


async def test_everything_pending_comes_at_once_in_order_and_then_the_end() -> None:
    send, recv = pair(3)
    for i in range(3):
        send.send_nowait(i)
    with pytest.raises(anyio.WouldBlock):
        send.send_nowait(3)  # full: the producer must wait (backpressure)
    assert not send.ready()
    assert recv.statistics().pending == 3
    assert recv.receive_nowait() == [0, 1, 2]
    assert send.ready()
    with pytest.raises(anyio.WouldBlock):
        recv.receive_nowait()
    send.send_nowait(3)
    send.close()
    send.close()  # idempotent
    assert recv.receive_nowait() == [3]  # what was sent before the close still comes
    with pytest.raises(anyio.EndOfStream):
        recv.receive_nowait()
    with pytest.raises(anyio.ClosedResourceError):
        send.send_nowait(4)


async def test_a_full_hand_over_makes_the_producer_wait_until_the_consumer_takes() -> None:
    send, recv = pair(1)
    got: list[int] = []

    async def producer() -> None:
        with send:
            for i in range(20):
                await send.send(i)

    async def consumer() -> None:
        with recv:
            while True:
                try:
                    items = recv.receive_nowait()
                except anyio.WouldBlock:
                    await recv.wait()
                    continue
                except anyio.EndOfStream:
                    return
                assert len(items) == 1  # never more than the limit
                got.extend(items)
                await anyio.sleep(0.001)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            tg.start_soon(consumer)
    assert got == list(range(20))


async def test_a_consumer_that_leaves_breaks_the_producer_even_while_it_waits() -> None:
    send, recv = pair(1)
    send.send_nowait(1)
    broken: list[type[BaseException]] = []

    async def producer() -> None:
        try:
            await send.send(2)  # waits: the hand-over is full
        except anyio.BrokenResourceError as exc:
            broken.append(type(exc))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            assert send.statistics().producer_waiting
            recv.close()
    assert broken == [anyio.BrokenResourceError]
    assert send.ready()  # ready to fail at once, not to block
    with pytest.raises(anyio.BrokenResourceError):
        send.send_nowait(3)
    with pytest.raises(anyio.ClosedResourceError):
        recv.receive_nowait()


async def test_wake_ends_a_wait_and_a_wake_before_the_wait_ends_the_next_one() -> None:
    send, recv = pair(1)
    woken: list[str] = []

    async def consumer() -> None:
        await recv.wait()
        woken.append("first")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            assert recv.statistics().consumer_waiting
            recv.wake()
    assert woken == ["first"]
    recv.wake()  # nobody waits: the next wait returns at once
    with anyio.fail_after(1):
        await recv.wait()
    with anyio.move_on_after(0.05) as idle:  # used up: this one waits
        await recv.wait()
    assert idle.cancelled_caught
    assert send.statistics().pending == 0


async def test_a_wait_with_items_pending_does_not_yield_and_a_waiting_one_can_be_cancelled() -> None:
    send, recv = pair(2)
    send.send_nowait(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await recv.wait()  # something is pending: returns without a checkpoint, so no Cancelled here
    assert not scope.cancelled_caught
    recv.receive_nowait()
    with anyio.move_on_after(0.05) as waited:
        await recv.wait()
    assert waited.cancelled_caught
    assert not recv.statistics().consumer_waiting
    send.send_nowait(2)  # the cancelled wait left nothing behind that would lose this
    assert recv.receive_nowait() == [2]


def test_a_hand_over_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="at least one"):
        create_handoff(0)


async def test_call_when_ready_calls_back_at_once_when_the_consumer_takes_and_when_it_leaves() -> None:
    pair: tuple[HandoffSend[int], HandoffReceive[int]] = create_handoff(1)
    send, recv = pair
    calls: list[str] = []
    send.call_when_ready(lambda: calls.append("now"))  # room: called at once
    assert calls == ["now"]
    send.send_nowait(1)
    send.call_when_ready(lambda: calls.append("taken"))
    assert calls == ["now"]  # full: waits for the consumer
    assert recv.receive_nowait() == [1]
    assert calls == ["now", "taken"]  # once
    send.send_nowait(2)
    send.call_when_ready(lambda: calls.append("left"))
    recv.close()
    assert calls == ["now", "taken", "left"]
    with pytest.raises(anyio.BrokenResourceError):
        send.send_nowait(3)
