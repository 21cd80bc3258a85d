"""Part 5: clients that read nothing — the service's memory per stalled stream, and the send timeout.

N clients (each with a 4 KiB socket receive buffer, as a stalled phone rather than
loopback's megabytes) open a stream of an upstream that writes as fast as it can,
then never read a byte.  The kernel's socket buffers fill, then the service's: the turn's
runner keeps reading Letta (the turn outlives a stalled client, for a resume) and the
throttle merges the text the client has not taken, so the service holds what the upstream
writes until the send timeout ends the stream.  The service's RSS is sampled while the
streams are stalled; its height over the idle RSS, divided by N, is the memory per stalled
stream (an endless flood here; a real answer is kilobytes).  After the send timeout, the
service must close every stream, and once the resume grace (:data:`~bench.concurrency.GRACE_S`
here) is over, cancel every upstream run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .client import open_stream
from .concurrency import GRACE_S, emulator_stats, make_agents
from .procs import Child, rss_kib
from .stats import r


async def stall(svc: Child, agent_ids: list[str], seconds: float) -> tuple[list[tuple[float, int]], list[Any]]:
    """Open the streams, read nothing for ``seconds``; the RSS samples (time, KiB) and the open writers."""
    writers = []
    for agent_id in agent_ids:
        body = {"agent_id": agent_id, "enable_thinking": False, "message": "flood [count 1000000] [rate 0] [pad 1000]"}
        _, writer, _ = await open_stream("127.0.0.1", svc.port, "/chat/stream", body, rcvbuf=4096)
        writers.append(writer)
    began, samples = time.monotonic(), []
    while (elapsed := time.monotonic() - began) < seconds:
        samples.append((r(elapsed, 1), rss_kib(svc.pid)))
        await asyncio.sleep(0.5)
    return samples, writers


def run(emulator: Child, quick: bool, log_dir: Path) -> dict[str, Any]:
    n, send_timeout = (20, 4.0) if quick else (100, 20.0)
    agent_ids = make_agents(emulator, n, f"slow-{time.monotonic_ns()}")
    svc = Child(
        "bench.service_proc",
        "--letta",
        emulator.url,
        "--send-timeout",
        str(send_timeout),
        "--resume-grace",
        str(GRACE_S),
        health="/health",
        log=log_dir / "service-slow.log",
    )
    with svc:
        time.sleep(0.5)
        idle = rss_kib(svc.pid)
        cancels0 = emulator_stats(emulator)["cancels"]

        async def scenario() -> tuple[list[tuple[float, int]], float, int]:
            samples, writers = await stall(svc, agent_ids, send_timeout - 1.0)
            began = time.monotonic()
            cancelled = 0
            while time.monotonic() - began < send_timeout + GRACE_S + 20:
                cancelled = emulator_stats(emulator)["cancels"] - cancels0
                if cancelled >= n and emulator_stats(emulator)["open"] == 0:
                    break
                await asyncio.sleep(0.2)
            for writer in writers:
                writer.close()
            return samples, time.monotonic() - began, cancelled

        samples, closed_after, cancelled = asyncio.run(scenario())
    half = [kib for t, kib in samples if t >= samples[-1][0] / 2]
    early = [kib for t, kib in samples if 1.0 <= t < samples[-1][0] / 2] or half
    row = {
        "streams": n,
        "send_timeout_s": send_timeout,
        "rss_idle_kib": idle,
        "rss_first_half_max_kib": max(early),
        "rss_second_half_max_kib": max(half),
        "growth_second_half_kib": max(half) - max(early),
        "per_stalled_stream_kib": r((max(half) - idle) / n, 1),
        "closed_after_s": r(closed_after + 1.0, 1),
        "upstream_cancels": cancelled,
        "grace_s": GRACE_S,
        "samples": samples,
    }
    print(f"  { ({k: v for k, v in row.items() if k != 'samples'}) }", flush=True)
    return row
