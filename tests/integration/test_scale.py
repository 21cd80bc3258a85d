"""A thousand students at once: every stream opens, keeps alive, and on disconnect leaves nothing behind.

Real Letta cannot run a thousand turns on this machine, so the upstream here is the
bench's Letta-API emulator (``bench/letta_emulator.py``, spoken to by the unchanged
``AsyncLetta``) in keepalive-only mode; it counts the cancel requests it receives.
"""

from __future__ import annotations

import os
import re
import resource
import time
from pathlib import Path

import anyio
import coredis
import httpx
import pytest

from app.metrics import StreamMetrics
from app.services import EXTENSION
from app.settings import Settings
from devstack.replicas import ServiceProcess, served_by
from devstack.service_thread import ServiceThread, free_port
from devstack.stack import LocalStack

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
    # default pools and cancel queue; a short grace: the clients leave for good
    settings = Settings(letta_base_url=emulator, keepalive_interval=1.0, resume_grace=2.0)
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
                body = {"agent_id": agent_id, "message": "[keepalive 2] stay with me"}
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
        left = time.monotonic()
        with anyio.fail_after(120):
            while True:
                async with httpx.AsyncClient(base_url=emulator) as letta:
                    stats = (await letta.get("/bench/stats")).json()
                if stats["cancels"] - cancels_before >= STREAMS and stats["open"] == 0 and service.task_count() <= idle:
                    break
                await anyio.sleep(0.5)
        print(f"\n{STREAMS} runs cancelled {time.monotonic() - left:.1f} s after their clients left (grace 2 s)")
        assert stats["cancels"] - cancels_before == STREAMS
        assert service.task_count() <= idle
    finally:
        await anyio.to_thread.run_sync(service.stop)


async def _metrics(service: ServiceThread) -> StreamMetrics:
    found: StreamMetrics = service.app.extensions[EXTENSION].metrics
    return found


async def test_a_thousand_disconnects_across_two_workers_cancel_every_run_and_leave_no_key(
    emulator: str, letta_stack: LocalStack, tmp_path: Path
) -> None:
    """As deployed: the launcher with two workers sharing turn state through the real Redis."""
    raise_fd_limit(STREAMS * 2 + 500)
    async with httpx.AsyncClient(base_url=emulator, timeout=30) as letta:
        spec = {"n": STREAMS, "prefix": "scale2", "agent": {"tags": ["letta-stream", "agent_type:tutor"]}}
        agent_ids: list[str] = (await letta.post("/bench/agents", json=spec)).json()
        cancels_before = (await letta.get("/bench/stats")).json()["cancels"]
    prefix = f"scale-{os.getpid()}:"
    keep = 3.0
    env = {
        **os.environ,
        "LETTA_BASE_URL": emulator,
        "SERVICE_AUTH": "off",
        "REDIS_URL": letta_stack.redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "STREAM_KEEPALIVE_SECONDS": "1",
        "STREAM_RESUME_GRACE_SECONDS": "2",
        "TURN_LOG_KEEP_SECONDS": str(keep),
    }
    service = ServiceProcess(free_port(), env, tmp_path / "service.log", workers=2)
    await anyio.to_thread.run_sync(service.start)
    try:
        assert len(service.worker_pids()) == 2
        served: set[str] = set()
        opened = 0
        limits = httpx.Limits(max_connections=STREAMS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
            all_open = anyio.Event()

            async def student(agent_id: str) -> None:
                nonlocal opened
                body = {"agent_id": agent_id, "message": "[keepalive 2] stay with me"}
                async with http.stream("POST", "/chat/stream", json=body) as response:
                    assert response.status_code == 200
                    served.add(served_by(response))
                    chunks = response.aiter_bytes()
                    async for chunk in chunks:
                        if b": keepalive" in chunk:
                            break
                    opened += 1
                    if opened == STREAMS:
                        all_open.set()
                    await anyio.sleep_forever()

            with anyio.fail_after(300):
                async with anyio.create_task_group() as tg:
                    for agent_id in agent_ids:
                        tg.start_soon(student, agent_id)
                    await all_open.wait()
                    assert await gauge(service.url, "letta_stream_active_streams") == STREAMS
                    # a stream's opening goes out in the request's own loop iteration, its runner's first step
                    # in the next one: under this burst an iteration lasts long, so the gauge may lag a little
                    with anyio.fail_after(10):
                        while await gauge(service.url, "letta_stream_running_turns") != STREAMS:  # noqa: ASYNC110
                            await anyio.sleep(0.1)
                    tg.cancel_scope.cancel()  # a thousand clients disconnect mid-stream
        assert len(served) == 2, served  # both workers served streams
        with anyio.fail_after(180):
            while True:
                async with httpx.AsyncClient(base_url=emulator) as letta:
                    stats = (await letta.get("/bench/stats")).json()
                running = await gauge(service.url, "letta_stream_running_turns")
                if stats["cancels"] - cancels_before >= STREAMS and stats["open"] == 0 and running == 0:
                    break
                await anyio.sleep(0.5)
        assert stats["cancels"] - cancels_before == STREAMS  # every run cancelled, once
        assert await gauge(service.url, "letta_stream_active_streams") == 0
        assert await gauge(service.url, "letta_stream_detached_turns") == 0
        await anyio.sleep(keep + 1)  # the logs are kept ``keep`` seconds after their turns ended
        redis = coredis.Redis(host="127.0.0.1", port=letta_stack.redis_port)
        async with redis:
            left = [k async for k in redis.scan_iter(match=prefix + "*")]
        assert left == []  # no key of ours outlives its turn
    finally:
        await anyio.to_thread.run_sync(service.stop)


async def gauge(url: str, name: str) -> float:
    """A gauge summed over every worker (``GET /metrics`` in multiprocess mode)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        text = (await http.get("/metrics")).text
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))
