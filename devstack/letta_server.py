"""The Letta 0.16.8 REST server as a child process, configured by environment.

Letta reads ``~/.letta`` (MCP config, tool sandbox, ``pg_uri``), so HOME and
LETTA_DIR point into the stack's data dir: nothing leaks into the user's home.
Letta gets no Redis: the service streams in foreground mode and keeps its own turn
logs, so Letta's background mode (which needs one) is not used.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devstack._proc import base_env, free_port, spawn, stop, wait_http_ok


@dataclass(frozen=True)
class ModelEndpoint:
    """Where Letta's ``openai`` provider points: the scripted LLM or a real one."""

    base_url: str
    api_key: str = "dummy"

    @classmethod
    def from_environment(cls) -> ModelEndpoint | None:
        """A real provider when OPENAI_API_KEY or OPENAI_BASE_URL is set, else None."""
        key, url = os.environ.get("OPENAI_API_KEY"), os.environ.get("OPENAI_BASE_URL")
        if not key and not url:
            return None
        return cls(base_url=url or "https://api.openai.com/v1", api_key=key or "dummy")


@dataclass
class LettaServer:
    venv: Path
    home: Path
    log: Path
    pg_uri: str
    model: ModelEndpoint
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        letta_dir = self.home / ".letta"
        letta_dir.mkdir(parents=True, exist_ok=True)
        return base_env(
            HOME=str(self.home),
            LETTA_DIR=str(letta_dir),
            LETTA_PG_URI=self.pg_uri,
            OPENAI_API_KEY=self.model.api_key,
            OPENAI_BASE_URL=self.model.base_url,
            # Letta's default (a fresh asyncpg connection per session) sometimes stalls 60 s on
            # connect after a failed model call; a pool avoids it (observed with 0.16.8 here).
            LETTA_DISABLE_SQLALCHEMY_POOLING="false",
            PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        )

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait for ``GET /v1/health/``; raises ``StackError`` with the log tail."""
        cmd = [str(self.venv / "bin" / "letta"), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = spawn(cmd, self.log, env=self.env(), cwd=self.home)
        proc = self.proc
        wait_http_ok(f"{self.url}/v1/health/", timeout, lambda: proc.poll() is None, "Letta server", self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=15)
            self.proc = None
