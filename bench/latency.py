"""Parts 2 and 4: per-event delay and throughput, direct from the emulator vs through the service.

One stream at a time.  Each target (the emulator itself, the service with throttle
window 0, the service with the default 50 ms window) is read with the same raw
client at each upstream rate; every run is checked (all deltas, in order, ended).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from .client import TOKEN, StreamResult, one_stream
from .procs import Child
from .stats import median, pct, r


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    body: dict[str, Any]  # the message goes into "input" (Letta) or "message" (service)
    key: str


@dataclass(frozen=True)
class Load:
    name: str
    rate: float  # deltas per second, 0 = as fast as possible
    count: int


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        found: dict[str, Any] = json.loads(response.read())
        return found


def summarise(results: list[StreamResult], count: int) -> dict[str, float]:
    """Medians over runs of each run's figures."""
    per_run = []
    for res in results:
        delays = res.delays_ms()
        last = max(recv for _, _, recv in res.stamps)
        per_run.append(
            {
                "ttfe_ms": (res.first_text_ns - res.started_ns) / 1e6,
                "p50_ms": pct(delays, 50),
                "p99_ms": pct(delays, 99),
                "max_ms": max(delays),
                "events_per_s": count / ((last - res.started_ns) / 1e9),
                "frames_per_1k": res.text_frames * 1000 / count,
            }
        )
    return {k: r(median([run[k] for run in per_run]), 3) for k in per_run[0]}


async def measure(target: Target, load: Load, runs: int) -> dict[str, float]:
    message = f"bench [count {load.count}] [rate {load.rate:g}]"
    body = {**target.body, target.key: message}
    results = []
    for i in range(runs + 1):  # the first run warms up and is dropped
        res = await one_stream("127.0.0.1", target.port, target.path, body, limit_s=120)
        for _ in range(50):  # the service frees the agent just after the stream ends: 409 until then
            if res.status != 409:
                break
            await asyncio.sleep(0.01)
            res = await one_stream("127.0.0.1", target.port, target.path, body, limit_s=120)
        res.check(load.count, f"{target.name} @ {load.name} run {i}")
        if i:
            results.append(res)
    return summarise(results, load.count)


def run(emulator: Child, services: dict[str, Child], agent_id: str, quick: bool, runs: int) -> dict[str, Any]:
    """Each load through each target: the emulator itself ("direct"), then ``services`` (ours and the plan's)."""
    scale = 10 if quick else 1
    loads = [
        Load("100 ev/s", 100, 200 // scale),
        Load("200 tok/s", 200, 400 // scale),
        Load("max rate", 0, 3000 // scale),
    ]
    targets = [
        Target(
            "direct",
            emulator.port,
            f"/v1/agents/{agent_id}/messages",
            {"streaming": True, "stream_tokens": True, "include_pings": True},
            "input",
        )
    ]
    targets += [
        Target(name, svc.port, "/chat/stream", {"agent_id": agent_id, "enable_thinking": False}, "message")
        for name, svc in services.items()
    ]
    out: dict[str, Any] = {}
    for load in loads:
        out[load.name] = {}
        for target in targets:
            out[load.name][target.name] = asyncio.run(measure(target, load, runs))
            print(f"  {load.name:10} {target.name:22} {out[load.name][target.name]}", flush=True)
    return out
