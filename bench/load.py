"""Parts 3 and 4: many streams at once through each target — throughput at max rate, and a classroom.

**Throughput** (1, 20, 100 concurrent streams, the emulator writing as fast as it can):
deltas delivered per second over all streams, from the first request to the last
``done``.  **Classroom**: 300 students whose streams start spread over 1 s, each answer
40 deltas/s for 10 s (a class asking at once, at a model's pace): the target process's
CPU while it serves them, and every delta's delay from the emulator's write to the
client's read (p50/p99 over all deltas of all streams).  Then the same for smaller classes
(:data:`CLASS_SIZES`, medians of 3 runs): how large a class one process serves within a delay.  Each figure
reuses its students' agents; a first, short pass (not counted) lets a service learn them,
as it would have at startup.  The emulator's CPU and the whole machine's are reported too:
on a small machine the emulator, the client, the kernel's loopback and the target share the cores.

One client process (raw asyncio sockets, :mod:`bench.client`) reads every stream and
checks each (all deltas, in order, ended); its own CPU is reported so it can be seen
not to be the bottleneck.  Every stream has its own agent (the service allows one turn
per agent).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from .client import StreamResult, one_stream
from .concurrency import make_agents
from .procs import Child, cpu_seconds, host_ticks, loadavg, tree_cpu_seconds
from .stats import median, pct, r

CLASS_SIZES = (50, 100, 150, 200)
"""Smaller classes measured after the full one (same rate, length and 1 s spread of starts)."""


async def streams(
    target: Child, agent_ids: list[str], message: str, spread_s: float, limit_s: float
) -> tuple[list[StreamResult], float, float, float]:
    """All streams at once (starts spread over ``spread_s``); results, wall s, target CPU s, client CPU s."""

    async def one(i: int, agent_id: str) -> StreamResult:
        await asyncio.sleep(spread_s * i / len(agent_ids))
        body = {"agent_id": agent_id, "enable_thinking": False, "message": message}
        for _ in range(100):  # the service frees an agent just after its stream ends: 409 until then
            res = await one_stream("127.0.0.1", target.port, "/chat/stream", body, limit_s=limit_s)
            if res.status != 409:
                break
            await asyncio.sleep(0.01)
        return res

    cpu0, client0, began = tree_cpu_seconds(target.pid), cpu_seconds(os.getpid()), time.monotonic()
    results = await asyncio.gather(*(one(i, a) for i, a in enumerate(agent_ids)))
    wall = time.monotonic() - began
    return list(results), wall, tree_cpu_seconds(target.pid) - cpu0, cpu_seconds(os.getpid()) - client0


def figures(results: list[StreamResult], count: int, wall: float, cpu: float, client_cpu: float) -> dict[str, float]:
    for i, res in enumerate(results):
        res.check(count, f"stream {i}")
    first = min(res.started_ns for res in results)
    last = max(res.ended_ns for res in results)
    delays = [d for res in results for d in res.delays_ms()]
    return {
        "deltas_per_s": count * len(results) / ((last - first) / 1e9),
        "delay_p50_ms": pct(delays, 50),
        "delay_p99_ms": pct(delays, 99),
        "cpu_pct": cpu / wall * 100,
        "client_cpu_pct": client_cpu / wall * 100,
        "frames_per_1k": sum(res.text_frames for res in results) * 1000 / (count * len(results)),
    }


def measure(
    emulator: Child, target: Child, n: int, message: str, count: int, runs: int, spread_s: float = 0.0
) -> dict[str, float]:
    agent_ids = make_agents(emulator, n, f"load-{n}-{time.monotonic_ns()}")  # students come back: the same agents
    warm, _, _, _ = asyncio.run(streams(target, agent_ids, "warm [count 5] [rate 0]", 0.0, 60.0))
    for i, res in enumerate(warm):  # a short first pass, not counted: the service learns the agents
        res.check(5, f"warm-up {i}")
    per_run = []
    for _ in range(max(runs, 1)):
        emulator_cpu, (busy, total) = cpu_seconds(emulator.pid), host_ticks()
        results, wall, cpu, client_cpu = asyncio.run(streams(target, agent_ids, message, spread_s, 120.0))
        emulator_cpu = cpu_seconds(emulator.pid) - emulator_cpu
        busy_now, total_now = host_ticks()
        host = {
            "emulator_cpu_pct": emulator_cpu / wall * 100,
            "host_busy_pct": (busy_now - busy) / max(total_now - total, 1) * 100,  # all cores: 100 = every core busy
        }
        per_run.append(figures(results, count, wall, cpu, client_cpu) | host)
    return {k: r(median([run[k] for run in per_run]), 2) for k in per_run[0]}


def throughput(emulator: Child, targets: dict[str, Child], quick: bool, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    total = 1500 if quick else 20000  # deltas per figure, spread over the streams
    for n in (1, 20, 100):
        count = max(total // n, 20)
        out[f"{n} streams"] = row = {"count_per_stream": count}
        for name, target in targets.items():
            row[name] = measure(emulator, target, n, f"bench [count {count}] [rate 0]", count, runs)
            print(f"  max rate, {n:3} streams, {name:22} {row[name]}", flush=True)
    return out


def classroom(emulator: Child, targets: dict[str, Child], quick: bool, runs: int = 3) -> dict[str, Any]:
    """The class of ``n`` at once (one run: it is long); then smaller classes (medians of ``runs``), to show
    how large a class one process serves in time."""
    n, rate, seconds = (40, 40, 2) if quick else (300, 40, 10)
    count = rate * seconds
    message = f"class [count {count}] [rate {rate}]"
    out: dict[str, Any] = {"streams": n, "rate": rate, "seconds": seconds, "spread_s": 1.0}
    for name, target in targets.items():
        out[name] = measure(emulator, target, n, message, count, 1, spread_s=1.0)  # one run: it is long
        out[name]["loadavg"] = loadavg()
        print(f"  classroom {n}x{rate}/s {name:22} {out[name]}", flush=True)
    sizes: list[dict[str, Any]] = []
    for size in (10, 20) if quick else CLASS_SIZES:
        row: dict[str, Any] = {"streams": size}
        for name, target in targets.items():
            row[name] = measure(emulator, target, size, message, count, runs, spread_s=1.0)
            print(f"  class of {size:3} x{rate}/s {name:22} {row[name]}", flush=True)
        sizes.append(row)
    out["class_sizes"] = sizes  # a list: the report's per-target rows are the dicts above
    out["class_size_runs"] = runs
    return out
