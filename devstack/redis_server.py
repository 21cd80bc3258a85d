"""A throw-away Redis for the service's shared turn state (``REDIS_URL``).

Every worker and replica keeps its turn records, turn logs and locks there; each key
has an expiry, nothing outlives a restart of the stack by design, so this Redis
persists nothing (``--save ""``, no AOF) and listens on loopback only.

The binary is Debian's ``redis-server``; a clean CI machine lacks it, so it is
installed here with apt-get (as root, or through passwordless sudo) rather than
by a manual setup step. Redis runs in the foreground as our child: stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack._proc import StackError, base_env, free_port, log_tail, spawn, stop

APT_PACKAGE = "redis-server"
DEBIAN_BINARY = Path("/usr/bin/redis-server")
INSTALL_HINT = f"apt-get install -y --no-install-recommends {APT_PACKAGE}"
# apt's "never heard of it" answers: only then is an `apt-get update` worth its time.
_UNKNOWN_PACKAGE = ("Unable to locate package", "has no installation candidate")


def find_redis_server() -> Path | None:
    """``redis-server`` on PATH, else Debian's ``/usr/bin/redis-server``, else None."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    return DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None


def _privilege_prefix() -> list[str] | None:
    """``[]`` as root, ``["sudo", "-n"]`` with passwordless sudo, else None."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo is None:
        return None
    probe = subprocess.run([sudo, "-n", "true"], capture_output=True, check=False, stdin=subprocess.DEVNULL)
    return [sudo, "-n"] if probe.returncode == 0 else None


def _apt(prefix: list[str], args: list[str], log: Path) -> tuple[int, str]:
    """Run apt-get non-interactively, append its output to ``log``; (exit code, output)."""
    # Wait for a concurrent apt/dpkg (another test session installing) instead of failing.
    cmd = [*prefix, "apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    env = base_env(DEBIAN_FRONTEND="noninteractive")
    if prefix:  # sudo drops the environment; pass it on the command line
        cmd = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", *cmd[len(prefix) :]]
    result = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env=env, stdin=subprocess.DEVNULL, timeout=900
    )
    output = f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(output)
    return result.returncode, output


def ensure_redis_server(log: Path) -> Path:
    """The ``redis-server`` binary, installed with apt-get first when missing.

    ``apt-get update`` runs only when the install fails because the package is
    unknown (a fresh image with empty lists). Raises ``StackError`` saying what to
    install when that is impossible here (no apt-get, or neither root nor
    passwordless sudo) or when apt-get fails (with its output's tail).
    """
    binary = find_redis_server()
    if binary is not None:
        return binary
    prefix = _privilege_prefix()
    if shutil.which("apt-get") is None or prefix is None:
        why = "no apt-get on this machine" if shutil.which("apt-get") is None else "not root and no passwordless sudo"
        raise StackError(
            f"redis-server is not installed and cannot be installed from here ({why}).\n"
            f"Install it as root: {INSTALL_HINT}\n"
            "(or put any redis-server >= 6.2 on PATH)"
        )
    install = ["install", "-y", "--no-install-recommends", APT_PACKAGE]
    code, output = _apt(prefix, install, log)
    if code != 0 and any(marker in output for marker in _UNKNOWN_PACKAGE):
        _apt(prefix, ["update"], log)
        code, output = _apt(prefix, install, log)
    binary = find_redis_server()
    if code != 0 or binary is None:
        tail = "\n".join(output.splitlines()[-30:])
        raise StackError(f"installing {APT_PACKAGE} failed (exit {code}); install it by hand: {INSTALL_HINT}\n{tail}")
    return binary


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
