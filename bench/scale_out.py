"""The classroom load on the shared turn store: one worker vs two, and the turn log's cost.

Both figures run the service as deployed with its turn state in a real Redis (started
here, like ``task up`` does): ``python -m app.launch`` with one or two worker processes
(CPU is the launcher's and its workers'), and one process with the turn log on (the
default) or off (``STREAM_RESUME=off``).  Redis's own command counters (``INFO
commandstats``) give the store's work per stream and second.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import coredis

from devstack.redis_server import start_redis

from .load import measure
from .procs import Child, loadavg


def _ours(emulator: Child, redis_url: str, log: Path, *args: str) -> Child:
    return Child(
        "bench.service_proc", "--letta", emulator.url, "--window", "0.05", "--redis", redis_url, *args,
        health="/health", log=log,
    )  # fmt: skip


async def _commands(port: int) -> tuple[int, int]:
    """Redis's counters: (scripts run — the store's round trips, one per update or log batch — and every
    command run, those inside the scripts included)."""
    redis = coredis.Redis(host="127.0.0.1", port=port)
    async with redis:
        stats = await redis.info("commandstats")
    calls = {
        k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if isinstance(v, dict) and "calls" in v
    }
    scripts = calls.get("eval", 0) + calls.get("evalsha", 0)
    return scripts, sum(v for k, v in calls.items() if k not in ("eval", "evalsha", "info"))


def run(emulator: Child, quick: bool, log_dir: Path) -> dict[str, Any]:
    n, rate, seconds = (40, 40, 2) if quick else (300, 40, 10)
    count = rate * seconds
    message = f"class [count {count}] [rate {rate}]"
    out: dict[str, Any] = {"streams": n, "rate": rate, "seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as data:
        redis = start_redis(Path(data), log_dir / "redis.log")
        try:
            targets = {
                "1 worker (launcher, Redis)": ("--workers", "1"),
                "2 workers (launcher, Redis)": ("--workers", "2"),
                "1 process, turn log on (Redis)": ("--resume", "on"),
                "1 process, turn log off": ("--resume", "off"),
            }
            for name, args in targets.items():
                with _ours(emulator, redis.url, log_dir / f"scale-{name.split()[0]}-{args[1]}.log", *args) as svc:
                    before = asyncio.run(_commands(redis.port))
                    row = measure(emulator, svc, n, message, count, 1, spread_s=1.0)
                    after = asyncio.run(_commands(redis.port))
                row["cpu_pct_per_100_streams"] = round(row["cpu_pct"] * 100 / n, 2)
                row["redis_scripts_per_stream_s"] = round((after[0] - before[0]) / (n * seconds), 2)
                row["redis_commands_per_stream_s"] = round((after[1] - before[1]) / (n * seconds), 2)
                row["loadavg"] = loadavg()
                out[name] = row
                print(f"  classroom {n}x{rate}/s {name:32} {row}", flush=True)
        finally:
            redis.stop()
    return out
