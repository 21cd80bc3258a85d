"""Part 3: N concurrent open streams through hypercorn, keepalive-only upstream.

A fresh service process per N (keepalive interval 1 s, upstream pings only at the
start), so its idle RSS is a clean baseline.  One asyncio client process opens the N
streams on raw sockets (ramped in batches), holds them, and records every keepalive's
arrival.  The client's own CPU time and event-loop lag are reported to show it is
not the bottleneck.  Closing the clients detaches every turn; once the resume grace
(:data:`GRACE_S` here) is over, the service must cancel every upstream run (checked against
the emulator's cancel counter; ``cancels_s`` counts from the clients' close).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from .client import StreamResult, open_stream, read_stream
from .comparator import PLAN_POOL, comparator
from .procs import Child, cpu_seconds, loadavg, rss_kib
from .stats import pct, r

UPSTREAM_PING_S = 60.0
GRACE_S = 2.0
"""The resume grace of the service under test (the default 30 s would only make the bench wait)."""


def emulator_stats(emulator: Child) -> dict[str, int]:
    with urllib.request.urlopen(emulator.url + "/bench/stats", timeout=10) as response:
        found: dict[str, int] = json.loads(response.read())
        return found


async def _read(reader: asyncio.StreamReader, res: StreamResult) -> None:
    try:
        await read_stream(reader, res)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        res.other.append(f"{type(exc).__name__}: {exc}"[:120])


def _outcomes(results: list[StreamResult]) -> dict[str, int]:
    """How the streams that did not get a 200 failed (status code or exception type)."""
    found: dict[str, int] = {}
    for res in results:
        if res.status != 200:
            key = f"HTTP {res.status}" if res.status else (res.other[0].split(":")[0] if res.other else "no headers")
            found[key] = found.get(key, 0) + 1
    return found


async def _lag_probe(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        began = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append((time.monotonic() - began - 0.05) * 1000)


async def hold_streams(svc: Child, agent_ids: list[str], hold: float, keepalive_s: float) -> dict[str, Any]:
    n = len(agent_ids)
    message = f"idle [keepalive {UPSTREAM_PING_S:g}]"
    results: list[StreamResult] = []
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []
    stop, lags = asyncio.Event(), list[float]()
    probe = asyncio.create_task(_lag_probe(stop, lags))
    began = time.monotonic()
    for start in range(0, n, 100):
        for agent_id in agent_ids[start : start + 100]:
            body = {"agent_id": agent_id, "enable_thinking": False, "message": message}
            reader, writer, res = await open_stream("127.0.0.1", svc.port, "/chat/stream", body)
            results.append(res)
            writers.append(writer)
            tasks.append(asyncio.create_task(_read(reader, res)))
        await asyncio.sleep(0.02)
    # wait (bounded) for every stream's headers
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(not res.headers_ns for res in results):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    ramp_s = time.monotonic() - began
    await asyncio.sleep(0.5)
    lags.clear()  # the client's loop lag while holding (the ramp's is not the question)
    cpu0, ccpu0, t0 = cpu_seconds(svc.pid), cpu_seconds(os.getpid()), time.monotonic()
    window_start = time.monotonic_ns()
    rss_samples = []
    while time.monotonic() - t0 < hold:
        rss_samples.append(rss_kib(svc.pid))
        await asyncio.sleep(0.25)
    window_end = time.monotonic_ns()
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(svc.pid) - cpu0) / elapsed * 100
    client_cpu = (cpu_seconds(os.getpid()) - ccpu0) / elapsed * 100
    stop.set()
    for writer in writers:
        writer.close()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks, probe, return_exceptions=True)
    gaps = []
    late = 0
    for res in results:
        times = [window_start, *[t for t in res.keepalives if window_start <= t <= window_end], window_end]
        stream_gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(times)]
        gaps.extend(stream_gaps)
        if max(stream_gaps) > keepalive_s * 1.5:
            late += 1
    return {
        "streams_with_headers": sum(1 for res in results if res.status == 200),
        "failures": _outcomes(results),
        "ramp_s": r(ramp_s),
        "rss_peak_kib": max(rss_samples),
        "rss_kib": rss_samples[-1],
        "cpu_pct": r(cpu, 1),
        "client_cpu_pct": r(client_cpu, 1),
        "client_loop_lag_max_ms": r(max(lags, default=0.0), 1),
        "keepalive_gap_p50_s": r(pct(gaps, 50), 3),
        "keepalive_gap_p99_s": r(pct(gaps, 99), 3),
        "keepalive_gap_max_s": r(max(gaps), 3),
        "streams_late": late,
    }


async def _warm(svc: Child, agent_ids: list[str]) -> None:
    from .client import one_stream

    for agent_id in agent_ids:
        body = {"agent_id": agent_id, "enable_thinking": False, "message": "warm [count 20] [rate 0]"}
        res = await one_stream("127.0.0.1", svc.port, "/chat/stream", body)
        res.check(20, "warm-up")


def make_agents(emulator: Child, n: int, prefix: str) -> list[str]:
    """N agents with the service's tags, one per stream (the service allows one turn per agent)."""
    spec = {"n": n, "prefix": prefix, "agent": {"tags": ["letta-stream", "agent_type:tutor"], "name": prefix}}
    request = urllib.request.Request(
        emulator.url + "/bench/agents", json.dumps(spec).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        found: list[str] = json.loads(response.read())
        return found


def one(
    emulator: Child, n: int, pool: int, keepalive_s: float, hold: float, log_dir: Path, plan: bool = False
) -> dict[str, Any]:
    """N streams held open through a fresh service (``plan``: the comparator, pool 4096, which neither
    sends keepalives nor cancels runs: only its memory and CPU are compared)."""
    agent_ids = make_agents(emulator, n + 3, f"conc{n}-{pool}-{time.monotonic_ns()}")
    if plan:
        svc = comparator(emulator.url, 4096, log_dir / f"plan-conc-{n}.log")
    else:
        svc = Child(
            "bench.service_proc",
            "--letta",
            emulator.url,
            "--window",
            "0.05",
            "--keepalive",
            str(keepalive_s),
            "--pool",
            str(pool),
            "--resume-grace",
            str(GRACE_S),
            health="/health",
            log=log_dir / f"service-conc-{n}-{pool}.log",
        )
    with svc:
        asyncio.run(_warm(svc, agent_ids[n:]))
        time.sleep(0.3)
        idle = rss_kib(svc.pid)
        cancels0 = emulator_stats(emulator)["cancels"]
        out = asyncio.run(hold_streams(svc, agent_ids[:n], hold, keepalive_s))
        out["upstream_open_during"] = None
        began = time.monotonic()
        deadline = began + (0 if plan else GRACE_S + 30)
        cancelled = 0
        while time.monotonic() < deadline:
            cancelled = emulator_stats(emulator)["cancels"] - cancels0
            if cancelled >= out["streams_with_headers"]:
                break
            time.sleep(0.2)
        cancels_s = r(time.monotonic() - began, 2)
        out.update(
            n=n,
            keepalive_s=keepalive_s,
            pool=PLAN_POOL if plan else "app's own (sharded)" if pool <= 0 else str(pool),
            rss_idle_kib=idle,
            rss_per_stream_kib=r((out["rss_kib"] - idle) / n, 1),
            upstream_cancels=cancelled,
            cancels_s=cancels_s,
            grace_s=None if plan else GRACE_S,
            loadavg=loadavg(),
        )
        out.pop("upstream_open_during")
        if plan:  # it sends no keepalives and cancels nothing
            out.update(streams_late=None, upstream_cancels=None, cancels_s=None)  # grace_s is None already
    return out


def run(emulator: Child, quick: bool, log_dir: Path) -> list[dict[str, Any]]:
    plans = (
        [(50, 0, 0.5, False), (50, 0, 0.5, True)]
        if quick
        else [*[(n, 0, 1.0, False) for n in (100, 500, 1000, 2000)], (2000, 0, 5.0, False), (1000, 0, 1.0, True)]
    )
    rows = []
    for n, pool, keepalive_s, plan in plans:
        hold = 2.0 if quick else max(5.0, 3 * keepalive_s)
        row = one(emulator, n, pool, keepalive_s, hold, log_dir, plan)
        print(f"  N={n} pool={row['pool']}: {row}", flush=True)
        rows.append(row)
    return rows
