"""More students than the Letta pool holds: those waiting for a connection leave, and the pool still works.

A pool of 8 connections (one shard) is taken by 8 open streams; 100 more students ask
for a stream and wait for a connection (their headers unsent); then all 108 disconnect at
once, three times over.  httpcore 1.0.9 loses a pool slot for good when a request is
cancelled just after the pool handed it a new connection (encode/httpcore#1093: exactly
what a freed slot and a leaving student at the same moment do); the service waits for a
slot in front of the pool instead (``app.upstream.PoolGate``), so afterwards it must still
serve every new stream.  The upstream is
the bench's Letta-API emulator.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from app.settings import Settings
from devstack.service_thread import ServiceThread

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

POOL = 8
WAITING = 100
ROUNDS = 3


async def test_clients_that_leave_while_waiting_for_a_pool_slot_do_not_wedge_the_pool(emulator: str) -> None:
    async with httpx.AsyncClient(base_url=emulator, timeout=30) as letta:
        n = ROUNDS * (POOL + WAITING) + 20
        spec = {"n": n, "prefix": "wedge", "agent": {"tags": ["letta-stream", "agent_type:tutor"]}}
        agent_ids: list[str] = (await letta.post("/bench/agents", json=spec)).json()
    later = agent_ids[-20:]
    settings = Settings(
        letta_base_url=emulator, letta_max_connections=POOL, letta_pool_shards=1, keepalive_interval=1.0, resume=False
    )
    service = ServiceThread(settings)
    await anyio.to_thread.run_sync(service.start)
    try:
        limits = httpx.Limits(max_connections=POOL + WAITING + 50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=service.url, timeout=30, limits=limits) as http:

            async def hold(agent_id: str, held: list[str], all_held: anyio.Event) -> None:
                body = {"agent_id": agent_id, "message": "[keepalive 0.5] stay"}
                async with http.stream("POST", "/chat/stream", json=body) as response:
                    assert response.status_code == 200
                    chunks = response.aiter_bytes()
                    async for _ in chunks:
                        break
                    held.append(agent_id)
                    if len(held) == POOL:
                        all_held.set()
                    await anyio.sleep_forever()

            async def wait_for_a_slot(agent_id: str) -> None:
                body = {"agent_id": agent_id, "message": "[keepalive 0.5] waiting"}
                async with http.stream("POST", "/chat/stream", json=body) as response:
                    assert response.status_code == 200  # only once a holder left: it is cancelled with it
                    await anyio.sleep_forever()

            for round_ in range(ROUNDS):
                ids = agent_ids[round_ * (POOL + WAITING) : (round_ + 1) * (POOL + WAITING)]
                held: list[str] = []
                all_held = anyio.Event()
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as everyone:
                        for agent_id in ids[:POOL]:
                            everyone.start_soon(hold, agent_id, held, all_held)
                        await all_held.wait()
                        for agent_id in ids[POOL:]:
                            everyone.start_soon(wait_for_a_slot, agent_id)
                        await anyio.sleep(1.0)  # all of them queued for a connection to Letta
                        everyone.cancel_scope.cancel()  # ... and every student leaves at once
                await anyio.sleep(1.0)  # the service notices and cancels the runs

            async def served(agent_id: str) -> None:
                body = {"agent_id": agent_id, "message": "[count 3] hello again"}
                async with http.stream("POST", "/chat/stream", json=body) as response:
                    assert response.status_code == 200
                    text = (await response.aread()).decode()
                assert '"type":"done"' in text

            with anyio.fail_after(20):  # a wedged pool would leave these waiting for its 300 s pool timeout
                async with anyio.create_task_group() as tg:
                    for agent_id in later:
                        tg.start_soon(served, agent_id)
    finally:
        await anyio.to_thread.run_sync(service.stop)
