"""Several replicas of the service behind HAProxy, as deployed — for ``task up --replicas N`` and tests.

``with Replicas(2, env, log_dir=tmp) as r: httpx.get(r.url + "/health")``

Each replica is one launcher process (``python -m app.launch``, see :mod:`app.launch`)
on its own free loopback port, with its worker processes; HAProxy listens in front
(:mod:`devstack.haproxy`).  Replicas share nothing but what ``env`` gives them all
(``LETTA_BASE_URL``, ``SERVICE_TOKEN``, ``REDIS_URL`` for shared turn state).  Every
process is started in its own session and stopped by PID (a replica: its launcher,
which stops its workers; ``kill`` may signal a replica's whole process group — the
launcher and its workers, all started here).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from devstack._proc import StackError, free_port, log_tail, spawn, stop
from devstack.haproxy import HAProxy, start_haproxy

REPO_ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"launch: ready: ")


def _processes() -> list[tuple[int, str, int, int, bytes]]:
    """Every live process: (pid, state, ppid, session id, command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        found.append((int(entry.name), fields[0], int(fields[1]), int(fields[3]), cmdline))
    return found


def launcher_workers(pid: int) -> list[int]:
    """The worker processes of the launcher ``pid`` (its multiprocessing children, without the resource tracker)."""
    return sorted(p for p, state, ppid, _, cmd in _processes() if ppid == pid and state != "Z" and b"spawn_main" in cmd)


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``: a launcher started in its own session and its workers."""
    return sorted(p for p, state, _, session, _ in _processes() if session == sid and state != "Z")


class ServiceProcess:
    """One launcher: ``python -m app.launch --bind 127.0.0.1:<port>`` with its log file."""

    def __init__(
        self,
        port: int,
        env: Mapping[str, str],
        log: Path,
        *,
        workers: int | None = None,
        config: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.port = port
        self.env = dict(env)
        self.log = log
        self.workers = workers
        self.config = config or REPO_ROOT / "hypercorn.toml"
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "app.launch", "--config", str(self.config), "--bind", f"127.0.0.1:{self.port}"]
        return cmd if self.workers is None else [*cmd, "--workers", str(self.workers)]

    def start(self, timeout: float = 90.0) -> ServiceProcess:
        """Start and wait until all its workers serve (the launcher's ``ready`` line)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = spawn(self.command(), self.log, self.env, REPO_ROOT)
        self.wait_ready(timeout)
        return self

    def log_text(self) -> str:
        """What this run (since the last start) wrote to the log."""
        with self.log.open("rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise StackError(f"the service on {self.port} exited ({code}) before serving\n{log_tail(self.log)}")
            if READY.search(self.log_text()):
                return
            time.sleep(0.1)
        raise StackError(f"the service on {self.port} not ready after {timeout:.0f} s\n{log_tail(self.log)}")

    def worker_pids(self) -> list[int]:
        return launcher_workers(self.pid)

    def signal(self, sig: int, *, group: bool = False) -> None:
        """Send ``sig`` to the launcher, or with ``group`` to it and its workers (its process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if group:
            os.killpg(self.proc.pid, sig)  # its own session: the group is the launcher's and its workers'
        else:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the launcher drains its workers) and wait; then kill whatever is left of its session.

        Workers outlive their launcher only when it was killed alone; they stop by themselves
        then (they watch it), and are given ``timeout`` before they are killed.
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            stop(self.proc, timeout)
        deadline = time.monotonic() + timeout
        while session_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if session_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we started, whose leader is gone


class Replicas:
    """``n`` launchers on free ports, and HAProxy in front of them on ``port`` (or a free one)."""

    def __init__(
        self,
        n: int,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        workers: int | None = None,
        port: int | None = None,
        ports: Sequence[int] | None = None,
        config: Path | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("at least one replica")
        self.log_dir = log_dir
        self.balancer_port = port or free_port()
        self.services = [
            ServiceProcess(p, env, log_dir / f"replica{i}.log", workers=workers, config=config)
            for i, p in enumerate(ports or [free_port() for _ in range(n)])
        ]
        self.proxy: HAProxy | None = None

    @property
    def url(self) -> str:
        """The balancer's URL: what clients use."""
        return f"http://127.0.0.1:{self.balancer_port}"

    @property
    def replica_urls(self) -> list[str]:
        return [s.url for s in self.services]

    @property
    def procs(self) -> list[subprocess.Popen[bytes] | None]:
        return [s.proc for s in self.services]

    def start(self) -> Replicas:
        try:
            for service in self.services:  # one at a time: both at once on 2 cores start no faster
                service.start()
            self.proxy = start_haproxy(
                [s.port for s in self.services],
                self.log_dir / "haproxy",
                self.log_dir / "haproxy.log",
                self.balancer_port,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, i: int, sig: int = signal.SIGKILL, *, timeout: float = 10.0) -> None:
        """Send ``sig`` to replica ``i``: SIGKILL to all its processes (the machine died), else to its launcher.

        After SIGKILL, returns once they are all gone (requests in flight at that moment fail
        with 502 at the balancer, as they would in production; later ones are routed around).
        """
        service = self.services[i]
        service.signal(sig, group=sig == signal.SIGKILL)
        if sig == signal.SIGKILL:
            service.wait(timeout)
            deadline = time.monotonic() + timeout
            while session_members(service.pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    def restart(self, i: int) -> None:
        """Stop replica ``i`` (if it still runs) and start it again on the same port."""
        self.services[i].stop()
        self.services[i].start()

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of the replicas: ``{"replica0": "UP", ...}``."""
        assert self.proxy is not None
        return self.proxy.server_states()

    def wait_state(self, i: int, state: str, timeout: float = 30.0) -> None:
        """Wait until HAProxy sees replica ``i`` as exactly ``state`` (``UP`` or ``DOWN``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_states().get(f"replica{i}") == state:
                return
            time.sleep(0.1)
        raise StackError(f"replica{i} not {state} after {timeout:.0f} s: {self.server_states()}")

    def stop(self) -> None:
        """The balancer first, then every replica (each drains); each step runs even if one fails."""
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        for service in self.services:
            service.stop()

    def __enter__(self) -> Replicas:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def served_by(response: httpx.Response) -> str:
    """The process that answered (``X-Served-By: host:pid``)."""
    found: str = response.headers.get("X-Served-By", "")
    return found
