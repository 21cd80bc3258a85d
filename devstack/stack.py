"""The real local stack: Redis, embedded Postgres -> scripted LLM -> Letta server.

One synchronous context manager serves pytest session fixtures and
``python -m devstack.stack`` (``task up``). Every component gets a free
loopback port and a log file under ``<data_dir>/logs``; a start failure
raises ``StackError`` carrying the relevant log tail. Redis is the service's
shared turn store (``REDIS_URL``); it is installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import TypeVar

from devstack._proc import StackError, base_env, free_port, port_is_free, spawn, stop, wait_http_ok
from devstack.letta_env import ensure_letta_env
from devstack.letta_server import LettaServer, ModelEndpoint
from devstack.postgres import Postgres, pgdata_for, start_postgres
from devstack.redis_server import RedisServer, start_redis

SCRIPTED_MODEL_HANDLE = "openai-proxy/scripted"  # provider is "openai-proxy" for a custom base URL
EMBEDDING_HANDLE = "openai/text-embedding-3-small"
T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["EMBEDDING_HANDLE", "SCRIPTED_MODEL_HANDLE", "LocalStack", "StackError"]


class LocalStack:
    """Start/stop the stack; attributes are valid between ``start()`` and ``stop()``.

    ``use_env_provider``: point Letta at OPENAI_BASE_URL/OPENAI_API_KEY from the
    environment when set (then pass ``model_handle``, e.g. ``openai/gpt-4o-mini``).
    Tests leave it False so answers always come from the scripted LLM.
    ``pgdata`` defaults to ``pgdata_for(root_dir, data_dir)``: ``<data_dir>/pgdata``
    unless running as root below a private directory (see ``devstack.postgres``).
    """

    def __init__(
        self,
        root_dir: Path,
        data_dir: Path,
        *,
        use_env_provider: bool = False,
        model_handle: str | None = None,
        embedding_handle: str = EMBEDDING_HANDLE,
        pgdata: Path | None = None,
        letta_timeout: float = 180.0,
    ) -> None:
        self.root_dir = root_dir.resolve()
        self.data_dir = data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        self.pgdata = (pgdata or pgdata_for(self.root_dir, self.data_dir)).resolve()
        self.real_model = ModelEndpoint.from_environment() if use_env_provider else None
        if self.real_model is not None and model_handle is None:
            raise ValueError("a real provider needs model_handle (e.g. 'openai/gpt-4o-mini')")
        self.model_handle = model_handle or SCRIPTED_MODEL_HANDLE
        self.embedding_handle = embedding_handle
        self.letta_timeout = letta_timeout
        self.ports = self._stable_ports()
        self.llm_url = f"http://127.0.0.1:{self.ports['llm']}/v1"
        self.redis: RedisServer | None = None
        self.postgres: Postgres | None = None
        self.llm_proc: subprocess.Popen[bytes] | None = None
        self.letta: LettaServer | None = None
        self.startup_seconds: dict[str, float] = {}

    @property
    def letta_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['letta']}"

    @property
    def redis_port(self) -> int:
        return self.ports["redis"]

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _stable_ports(self) -> dict[str, int]:
        """Reuse the ports of the last run on this data dir when they are free.

        Letta stores the model endpoint URL (with the LLM's port) in every agent,
        so a reused data dir needs the same LLM port for old agents to keep working.
        """
        path = self.data_dir / "ports.json"
        try:
            old: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        ports = {
            name: old[name] if name in old and port_is_free(old[name]) else free_port()
            for name in ("redis", "postgres", "llm", "letta")
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ports))
        return ports

    def start(self) -> LocalStack:
        try:
            venv = self._timed(
                "letta-env", lambda: ensure_letta_env(self.root_dir, log=self.logs_dir / "letta-env.log")
            )
            # First: on a clean machine this may apt-get install redis-server, and if that is
            # impossible the stack fails before anything else was started.
            self.redis = self._timed(
                "redis",
                lambda: start_redis(self.data_dir / "redis", self.logs_dir / "redis.log", self.redis_port),
            )
            self.postgres = self._timed(
                "postgres",
                lambda: start_postgres(venv, self.pgdata, self.logs_dir / "postgres-setup.log", self.ports["postgres"]),
            )
            self._timed("scripted-llm", self._start_llm)
            self.letta = LettaServer(
                venv=venv,
                home=self.data_dir / "letta-home",
                log=self.logs_dir / "letta.log",
                pg_uri=self.postgres.uri,
                model=self.real_model or ModelEndpoint(self.llm_url),
                port=self.ports["letta"],
            )
            letta = self.letta
            self._timed("letta", lambda: letta.start(self.letta_timeout))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_llm(self) -> None:
        log = self.logs_dir / "scripted-llm.log"
        cmd = [
            sys.executable,
            "-m",
            "tests.scripted_llm",
            "--port",
            str(self.ports["llm"]),
            "--log-requests",
            str(self.logs_dir / "llm-requests.jsonl"),
        ]
        self.llm_proc = spawn(cmd, log, env=base_env(), cwd=self.root_dir)
        proc = self.llm_proc
        wait_http_ok(f"{self.llm_url}/models", 30, lambda: proc.poll() is None, "scripted LLM", log)

    def _timed(self, name: str, step: Callable[[], T]) -> T:
        began = time.monotonic()
        result = step()
        self.startup_seconds[name] = round(time.monotonic() - began, 2)
        return result

    def stop(self) -> None:
        """Reverse order; each step runs even if an earlier one failed."""
        if self.letta is not None:
            self.letta.stop()
            self.letta = None
        if self.llm_proc is not None:
            stop(self.llm_proc)
            self.llm_proc = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Start the stack, print its URLs, wait for Ctrl-C (or SIGTERM), stop it."""
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=main.__doc__)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".stack" / "data")
    parser.add_argument(
        "--env-provider", action="store_true", help="use OPENAI_BASE_URL/OPENAI_API_KEY instead of the scripted LLM"
    )
    parser.add_argument("--model-handle", default=os.environ.get("LETTA_MODEL_HANDLE"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    stack = LocalStack(REPO_ROOT, args.data_dir, use_env_provider=args.env_provider, model_handle=args.model_handle)
    try:
        with stack:
            print(f"LETTA_URL={stack.letta_url}", flush=True)
            print(f"LLM_URL={stack.llm_url}", flush=True)
            print(f"REDIS_URL={stack.redis_url}", flush=True)
            print(f"MODEL_HANDLE={stack.model_handle}", flush=True)
            print(f"EMBEDDING_HANDLE={stack.embedding_handle}", flush=True)
            print(f"LOGS={stack.logs_dir}  startup={stack.startup_seconds}", flush=True)
            print("stack is up; Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except StackError as exc:
        sys.exit(f"stack failed to start: {exc}")


if __name__ == "__main__":
    main()
