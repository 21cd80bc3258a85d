"""The cancel queue: every submitted run is cancelled, a few at a time, and shutdown drains it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from app.cancels import RunCanceller

pytestmark = pytest.mark.anyio


class CountingMessages:
    def __init__(self, fail_for: set[str] | None = None) -> None:
        self.cancelled: list[tuple[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_for = fail_for or set()

    async def cancel(self, agent_id: str, **kwargs: Any) -> dict[str, str]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await anyio.sleep(0.001)
        self.in_flight -= 1
        if agent_id in self.fail_for:
            raise ConnectionError("letta went away")
        self.cancelled.append((agent_id, kwargs.get("run_ids")))
        return {}


def client(messages: CountingMessages) -> Any:
    agents = type("Agents", (), {"messages": messages})()
    return type("Letta", (), {"agents": agents})()


async def test_every_submitted_run_is_cancelled_with_bounded_concurrency_and_drained_on_shutdown() -> None:
    messages = CountingMessages()
    canceller = RunCanceller(client(messages), workers=4)
    shutdown = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(canceller.run, shutdown.wait)
        for i in range(200):
            canceller.submit(f"agent-{i}", f"run-{i}")
        shutdown.set()  # shutdown right away: what is queued is still sent
    assert sorted(messages.cancelled) == sorted((f"agent-{i}", [f"run-{i}"]) for i in range(200))
    assert messages.most_in_flight <= 4
    assert canceller.sent == 200


async def test_a_failed_cancel_is_counted_and_does_not_stop_the_others() -> None:
    messages = CountingMessages(fail_for={"agent-bad"})
    canceller = RunCanceller(client(messages), workers=2)
    shutdown = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(canceller.run, shutdown.wait)
        for agent in ("agent-1", "agent-bad", "agent-2"):
            canceller.submit(agent, None)
        shutdown.set()
    assert sorted(a for a, _ in messages.cancelled) == ["agent-1", "agent-2"]
    assert (canceller.sent, canceller.failed) == (2, 1)


async def test_after_shutdown_submissions_are_dropped_not_blocking() -> None:
    canceller = RunCanceller(client(CountingMessages()), workers=1)
    shutdown = anyio.Event()
    shutdown.set()
    await canceller.run(shutdown.wait)
    canceller.submit("agent-late", "run-late")
    assert canceller.dropped == 1
