"""The turn host's lease loop: it cancels a runner only when another process took its turn over."""

from __future__ import annotations

import anyio
import pytest

from app.store.memory import MemoryStore
from app.turn_host import TurnHost
from app.turn_machine import Adopt, Claim, Drain, Finish

pytestmark = pytest.mark.anyio

AGENT = "agent-1"


class _Canceller:
    def submit(self, agent_id: str, run_id: str | None) -> None:
        pass


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_runner_that_finished_is_not_cut_short_while_it_hands_out_the_last_frame() -> None:
    host = TurnHost(MemoryStore(), _Canceller(), grace=5.0, lease=0.3)  # type: ignore[arg-type]
    handed_out, began = anyio.Event(), anyio.Event()
    shutdown = anyio.Event()

    async def runner() -> None:
        began.set()
        await host.apply(AGENT, Finish("turn-1", host.owner))  # the record is gone ...
        await anyio.sleep(0.5)  # ... while the last frame still goes out (a lease renewal falls in here)
        handed_out.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(host.run, shutdown.wait)
        await anyio.sleep(0.01)
        await host.apply(AGENT, Claim("turn-1", host.owner, "conn-1", host.lease))
        host.start(AGENT, "turn-1", runner)
        with anyio.fail_after(3):
            await began.wait()
            await host.wait_idle(2.0)
        shutdown.set()
    assert handed_out.is_set()


async def test_a_runner_whose_turn_was_taken_over_is_cancelled() -> None:
    host = TurnHost(MemoryStore(), _Canceller(), grace=5.0, lease=0.3)  # type: ignore[arg-type]
    ended = anyio.Event()
    shutdown = anyio.Event()

    async def runner() -> None:
        try:
            await anyio.sleep(5)
        finally:
            ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(host.run, shutdown.wait)
        await anyio.sleep(0.01)
        await host.apply(AGENT, Claim("turn-1", host.owner, "conn-1", host.lease))
        host.start(AGENT, "turn-1", runner)
        # as if this process had stalled: its turn is orphaned, and another process adopts it (a takeover)
        await host.store.apply(AGENT, Drain("turn-1", host.owner, 5.0), grace=5.0)
        took = await host.store.apply(AGENT, Adopt("turn-1", "conn-2", "elsewhere", 10.0), grace=5.0)
        assert took.record is not None
        assert took.record.owner == "elsewhere"
        with anyio.fail_after(3):
            await ended.wait()
        shutdown.set()
