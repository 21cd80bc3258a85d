"""letta-stream on real hypercorn in its own process, for the bench.

``python -m bench.service_proc --port P --letta URL --window W --keepalive K [--pool N]``

The service as deployed: ``create_app`` with its own Letta clients and hypercorn with the
settings of ``hypercorn.toml`` (its event loop — ``worker_class`` — included); only the
bind address, logging and the shutdown grace are the bench's.  ``--pool N`` hands
``create_app`` one client with a plain N-connection pool instead.  Binds 127.0.0.1 only;
stops on SIGTERM/SIGINT through hypercorn's shutdown trigger.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

import attrs
import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config
from letta_client import AsyncLetta

from app.factory import create_app
from app.launch import loop_factory
from app.settings import Settings

from .client import TOKEN
from .letta_emulator import raise_fd_limit
from .procs import REPO_ROOT


def build_client(settings: Settings, pool: int) -> AsyncLetta | None:
    if pool <= 0:
        return None
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=min(pool, 100))
    return AsyncLetta(
        base_url=settings.letta_base_url,
        timeout=httpx.Timeout(settings.letta_timeout, connect=5.0),
        max_retries=0,
        http_client=httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(settings.letta_timeout, connect=5.0)),
    )


def log_gc_pauses(threshold_s: float = 0.02) -> None:
    """Print garbage-collector pauses longer than ``threshold_s`` (for --diagnose)."""
    began: dict[str, float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began["t"] = time.perf_counter()
        elif "t" in began and (took := time.perf_counter() - began.pop("t")) > threshold_s:
            print(f"gc gen{info['generation']} pause {took * 1000:.0f} ms, collected {info['collected']}", flush=True)

    gc.callbacks.append(callback)


async def log_loop_lag(threshold_s: float = 0.1) -> None:
    """Print event-loop stalls longer than ``threshold_s`` (for --diagnose)."""
    while True:
        began = time.perf_counter()
        await asyncio.sleep(0.05)
        if (lag := time.perf_counter() - began - 0.05) > threshold_s:
            print(f"loop stalled {lag * 1000:.0f} ms", flush=True)


async def run(args: argparse.Namespace) -> None:
    values = {
        "letta_base_url": args.letta,
        "throttle_window": args.window,
        "throttle_leading": args.leading == "on",
        "keepalive_interval": args.keepalive,
        "model": args.model,
        "embedding": args.embedding,
        "service_token": TOKEN,
        "send_timeout": args.send_timeout,
        "resume": args.resume == "on",
        "resume_grace": args.resume_grace,
        "redis_url": args.redis,
        "letta_http": args.letta_http,
        "gc_young_threshold": args.gc_young,
    }
    known = {field.name for field in attrs.fields(Settings)}
    settings = Settings(**{k: v for k, v in values.items() if k in known})
    app = create_app(settings, client=build_client(settings, args.pool))
    config = deployed_config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    if args.diagnose:
        log_gc_pauses()
        probe = asyncio.create_task(log_loop_lag())
        probe.add_done_callback(lambda _: None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)


def deployed_config() -> Config:
    """hypercorn's settings as ``hypercorn app:app -c hypercorn.toml`` reads them."""
    return Config.from_toml(REPO_ROOT / "hypercorn.toml")


def launch(args: argparse.Namespace) -> None:
    """Become ``python -m app.launch`` with ``args.workers`` workers: the service as deployed on several cores."""
    env = {
        **os.environ,
        "LETTA_BASE_URL": args.letta,
        "STREAM_THROTTLE_SECONDS": str(args.window),
        "STREAM_THROTTLE_LEADING": args.leading,
        "STREAM_KEEPALIVE_SECONDS": str(args.keepalive),
        "SERVICE_TOKEN": TOKEN,
        "STREAM_SEND_TIMEOUT_SECONDS": str(args.send_timeout),
        "STREAM_RESUME": args.resume,
        "STREAM_RESUME_GRACE_SECONDS": str(args.resume_grace),
        "LETTA_MODEL": args.model,
        "LETTA_EMBEDDING": args.embedding,
        "LETTA_HTTP": args.letta_http,
        "GC_YOUNG_THRESHOLD": str(args.gc_young),
    }
    if args.redis:
        env["REDIS_URL"] = args.redis
    cmd = [sys.executable, "-m", "app.launch", "--bind", f"127.0.0.1:{args.port}", "--workers", str(args.workers)]
    os.execve(sys.executable, cmd, env)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.service_proc")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--letta", required=True)
    parser.add_argument("--window", type=float, default=0.05)
    parser.add_argument("--keepalive", type=float, default=15.0)
    parser.add_argument("--leading", choices=("on", "off"), default="on", help="STREAM_THROTTLE_LEADING")
    parser.add_argument("--pool", type=int, default=0)
    parser.add_argument("--resume", choices=("on", "off"), default="on", help="STREAM_RESUME")
    parser.add_argument(
        "--resume-grace", type=float, default=30.0, help="STREAM_RESUME_GRACE_SECONDS: how long a dropped turn waits"
    )
    parser.add_argument("--send-timeout", type=float, default=30.0, help="STREAM_SEND_TIMEOUT_SECONDS")
    parser.add_argument("--diagnose", action="store_true", help="log GC pauses and event-loop stalls")
    parser.add_argument("--gc-young", type=int, default=50_000, help="GC_YOUNG_THRESHOLD (0: CPython's defaults)")
    parser.add_argument("--letta-http", default="httptools", help="LETTA_HTTP: the transport under the Letta clients")
    parser.add_argument("--redis", default=None, help="REDIS_URL: the turn store in Redis (default: in memory)")
    parser.add_argument(
        "--workers", type=int, default=0, help="serve through the launcher with this many worker processes"
    )
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    parser.add_argument("--embedding", default="openai/text-embedding-3-small")
    args = parser.parse_args()
    raise_fd_limit()
    if args.workers > 0:
        launch(args)  # does not return: this process becomes the launcher (same pid)
    logging.basicConfig(level=getattr(logging, os.environ.get("BENCH_LOG", "WARNING")))
    run_on_deployed_loop(run(args))


def run_on_deployed_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the event loop ``hypercorn.toml`` names (``worker_class``), as the launcher picks it."""
    with asyncio.Runner(loop_factory=loop_factory(deployed_config().worker_class)) as runner:
        runner.run(main)


if __name__ == "__main__":
    main()
