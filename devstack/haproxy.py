"""A load balancer in front of several replicas of the service: Debian's HAProxy.

Round robin over the replicas on 127.0.0.1.  What matters for this service:

- **Streams pass through unbuffered.**  In HTTP mode HAProxy forwards a response's
  data as it arrives (nothing here buffers or compresses it); ``option http-no-delay``
  sends each small SSE frame at once instead of waiting to merge it with the next.
- **Long streams are not cut.**  ``timeout client``/``timeout server`` (75 s) are idle
  timeouts, longer than the 15 s keepalive comments of an open stream.
- **A replica that goes away is routed around.**  A request that cannot connect is
  tried again on another replica (``retries`` with ``option redispatch``), and the
  health check takes a dead or stopping replica out of rotation.  Only connection
  failures are retried: a request a replica has received (a chat message) is never
  sent twice.
- **The health check asks whether the process answers**, not whether Letta does:
  ``GET /live`` (200, or 503 while the replica drains).  ``/health`` would answer
  503 on every replica at once when Letta is down, and ``/metrics`` needs the token.

HAProxy runs in the foreground as our child (``-db``), its log on stdout into the log
file, and is stopped by PID.  The binary is Debian's ``haproxy`` (2.6), installed with
apt-get when missing, like ``redis-server``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack._proc import StackError, base_env, free_port, log_tail, spawn, stop
from devstack.apt import ensure_debian_binary

APT_PACKAGE = "haproxy"
DEBIAN_BINARY = Path("/usr/sbin/haproxy")
CHECK_PATH = "/live"
IDLE_TIMEOUT = "75s"  # longer than a stream's 15 s keepalive


def ensure_haproxy(log: Path) -> Path:
    """The ``haproxy`` binary, installed with apt-get first when missing."""
    return ensure_debian_binary(APT_PACKAGE, "haproxy", DEBIAN_BINARY, log)


def haproxy_config(port: int, backends: Sequence[int], *, stats_socket: Path | None = None) -> str:
    """A configuration balancing 127.0.0.1:``port`` over the replicas on 127.0.0.1:``backends``."""
    stats = f"    stats socket {stats_socket} mode 600 level admin\n" if stats_socket else ""
    servers = "".join(f"    server replica{i} 127.0.0.1:{p} check\n" for i, p in enumerate(backends))
    return f"""# written by devstack/haproxy.py
global
    log stdout format raw local0 info
    # no maxconn: HAProxy derives it from the file descriptor limit it is given
{stats}
defaults
    mode http
    log global
    option httplog
    option http-no-delay            # each SSE frame goes out at once
    timeout connect 2s
    timeout client {IDLE_TIMEOUT}   # idle time, not a stream's length: keepalives come every 15 s
    timeout server {IDLE_TIMEOUT}
    timeout http-request 10s
    timeout http-keep-alive 60s     # below the service's keep_alive_timeout (75 s)
    timeout queue 30s
    retries 3                       # connection failures only: a received request is never sent twice
    option redispatch 1             # ... each retry on another replica

frontend service
    bind 127.0.0.1:{port}
    option forwardfor
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET {CHECK_PATH}
    http-check expect status 200
    default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2
{servers}"""


@dataclass
class HAProxy:
    """``haproxy`` as a foreground child, listening on 127.0.0.1:``port``."""

    binary: Path
    work_dir: Path
    log: Path
    backends: list[int]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "haproxy.cfg"

    @property
    def stats_socket(self) -> Path:
        return self.work_dir / "haproxy.sock"

    def start(self, timeout: float = 30.0) -> None:
        """Check the configuration, start, wait until every replica is UP; ``StackError`` with the log tail."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(haproxy_config(self.port, self.backends, stats_socket=self.stats_socket))
        checked = subprocess.run(
            [str(self.binary), "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise StackError(f"haproxy rejects {self.config_path}:\n{checked.stdout}{checked.stderr}")
        self.proc = spawn([str(self.binary), "-db", "-f", str(self.config_path)], self.log, base_env(), self.work_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # until every replica passed its first check
            if self.proc.poll() is not None:
                raise StackError(f"haproxy exited ({self.proc.returncode}) at start\n{log_tail(self.log)}")
            try:
                states = self.server_states()
            except OSError:  # its stats socket is not there yet
                states = {}
            if states and all(state == "UP" for state in states.values()):
                return
            time.sleep(0.05)
        self.stop()
        raise StackError(f"haproxy: not every replica up after {timeout:.0f} s ({states})\n{log_tail(self.log)}")

    def server_states(self) -> dict[str, str]:
        """Each replica's state as HAProxy sees it now, from its stats socket.

        ``UP``, ``DOWN``, or on the way: ``UP 1/2`` (a check failed; or not checked yet),
        ``DOWN 1/2`` (a check passed).
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        states = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "replicas" and row.get("svname", "").startswith("replica"):
                states[row["svname"]] = row["status"]
        return states

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def start_haproxy(
    backends: Sequence[int], work_dir: Path, log: Path, port: int | None = None, *, install_log: Path | None = None
) -> HAProxy:
    """Install ``haproxy`` if needed, start it on ``port`` (or a free one) in front of ``backends``."""
    binary = ensure_haproxy(install_log or log.with_name("haproxy-install.log"))
    proxy = HAProxy(binary=binary, work_dir=work_dir, log=log, backends=list(backends), port=port or free_port())
    proxy.start()
    return proxy
