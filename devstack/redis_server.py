"""A throw-away Redis for the service's shared turn state (``REDIS_URL``).

Every worker and replica keeps its turn records, turn logs and locks there; each key
has an expiry, nothing outlives a restart of the stack by design, so this Redis
persists nothing (``--save ""``, no AOF) and listens on loopback only.

The binary is Debian's ``redis-server``; a clean CI machine lacks it, so it is
installed here with apt-get (as root, or through passwordless sudo) rather than
by a manual setup step. Redis runs in the foreground as our child: stopped by PID.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack._proc import StackError, base_env, free_port, log_tail, spawn, stop
from devstack.apt import ensure_debian_binary, find_binary

APT_PACKAGE = "redis-server"
DEBIAN_BINARY = Path("/usr/bin/redis-server")


def find_redis_server() -> Path | None:
    """``redis-server`` on PATH, else Debian's ``/usr/bin/redis-server``, else None."""
    return find_binary("redis-server", DEBIAN_BINARY)


def ensure_redis_server(log: Path) -> Path:
    """The ``redis-server`` binary, installed with apt-get first when missing (:mod:`devstack.apt`)."""
    return ensure_debian_binary(APT_PACKAGE, "redis-server", DEBIAN_BINARY, log)


def ping(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis answers ``PING`` (inline command) with ``+PONG`` on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """``redis-server`` as a foreground child on 127.0.0.1; nothing is persisted."""

    binary: Path
    data_dir: Path
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",  # no RDB snapshots: background-stream chunks are disposable
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.data_dir),
            "--protected-mode",
            "yes",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait for ``+PONG``; raises ``StackError`` with the log tail."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.command(), self.log, env=base_env(), cwd=self.data_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"Redis exited ({self.proc.returncode}) before answering PING\n{log_tail(self.log)}")
            if ping(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise StackError(f"Redis not answering PING on port {self.port} after {timeout:.0f} s\n{log_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def start_redis(data_dir: Path, log: Path, port: int | None = None, *, install_log: Path | None = None) -> RedisServer:
    """Install ``redis-server`` if needed, start it on ``port`` (or a free one), wait for PING."""
    binary = ensure_redis_server(install_log or log.with_name("redis-install.log"))
    server = RedisServer(binary=binary, data_dir=data_dir, log=log, port=port or free_port())
    server.start()
    return server
