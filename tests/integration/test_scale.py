"""A thousand students at once: every stream opens, keeps alive, and on disconnect leaves nothing behind.

Real Letta cannot run a thousand turns on this machine, so the upstream here is the
bench's Letta-API emulator (``bench/letta_emulator.py``, spoken to by the unchanged
``AsyncLetta``) in keepalive-only mode; it counts the cancel requests it receives.
"""

from __future__ import annotations

import resource

import anyio
import httpx
import pytest

from app.metrics import StreamMetrics
from app.services import EXTENSION
from app.settings import Settings
from devstack.service_thread import ServiceThread

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

STREAMS = 1000


def raise_fd_limit(needed: int) -> None:
    """Client, server and upstream sides of every stream live in this process: ~3 descriptors a stream."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= needed, "the hard limit on open files is too low"


async def test_a_thousand_disconnects_leave_no_task_and_cancel_every_run(emulator: str) -> None:
    raise_fd_limit(STREAMS * 3 + 500)
    async with httpx.AsyncClient(base_url=emulator, timeout=30) as letta:
        spec = {"n": STREAMS, "prefix": "scale", "agent": {"tags": ["letta-stream", "agent_type:tutor"]}}
        agent_ids: list[str] = (await letta.post("/bench/agents", json=spec)).json()
        cancels_before = (await letta.get("/bench/stats")).json()["cancels"]  # the emulator is shared
    settings = Settings(letta_base_url=emulator, keepalive_interval=1.0)  # default pools and cancel queue
    service = ServiceThread(settings)
    await anyio.to_thread.run_sync(service.start)
    try:
        idle = service.task_count()
        opened = 0
        limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
            all_open = anyio.Event()

            async def student(agent_id: str) -> None:
                nonlocal opened
                body = {"agent_id": agent_id, "message": "[keepalive 0.5] stay with me"}
                async with http.stream("POST", "/chat/stream", json=body) as response:
                    assert response.status_code == 200
                    chunks = response.aiter_bytes()  # keep a reference: a collected iterator closes the response
                    async for chunk in chunks:
                        if b": keepalive" in chunk:
                            break
                    opened += 1
                    if opened == STREAMS:
                        all_open.set()
                    await anyio.sleep_forever()  # hold the stream open until everyone leaves at once

            with anyio.fail_after(240):
                async with anyio.create_task_group() as tg:
                    for agent_id in agent_ids:
                        tg.start_soon(student, agent_id)
                    await all_open.wait()
                    metrics = service.run(_metrics(service))
                    assert metrics.active == STREAMS, metrics
                    tg.cancel_scope.cancel()  # a thousand clients disconnect mid-stream
        with anyio.fail_after(120):
            while True:
                async with httpx.AsyncClient(base_url=emulator) as letta:
                    stats = (await letta.get("/bench/stats")).json()
                if stats["cancels"] - cancels_before >= STREAMS and stats["open"] == 0 and service.task_count() <= idle:
                    break
                await anyio.sleep(0.5)
        assert stats["cancels"] - cancels_before == STREAMS
        assert service.task_count() <= idle
    finally:
        await anyio.to_thread.run_sync(service.stop)


async def _metrics(service: ServiceThread) -> StreamMetrics:
    found: StreamMetrics = service.app.extensions[EXTENSION].metrics
    return found
