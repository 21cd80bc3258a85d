"""The comparator: the original plan's design (``bench/comparator_app.py``) in its own environment.

:func:`ensure_venv` makes ``.stack/comparator-venv`` with uv from PyPI the first time
(fastapi, uvicorn, letta-client 1.12.1, httpx; ~10 s with a warm uv cache), so the
comparator shares no package with the service.  :func:`comparator` starts it as a
:class:`~bench.procs.Child` against the same emulator as the service.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .procs import REPO_ROOT, Child

VENV = REPO_ROOT / ".stack" / "comparator-venv"
REQUIREMENTS = ("fastapi", "uvicorn", "letta-client==1.12.1", "httpx==0.28.1")

PLAN = "plan (FastAPI+uvicorn)"
PLAN_POOL = "plan, pool 4096"
"""The two comparator targets: letta-client's default pool (100 connections), and one raised to 4096."""


def ensure_venv() -> str:
    """The comparator environment's python, made if missing."""
    python = VENV / "bin" / "python"
    marker = VENV / ".complete"
    if not marker.exists():
        uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
        print(f"  making {VENV} ({', '.join(REQUIREMENTS)}) ...", flush=True)
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(VENV)], check=True)
        subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), *REQUIREMENTS], check=True)
        marker.write_text("\n".join(REQUIREMENTS) + "\n")
    return str(python)


def versions(python: str) -> str:
    code = "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
    code += "('fastapi', 'uvicorn', 'letta-client', 'httpx', 'httpcore')))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def comparator(emulator_url: str, pool: int, log: Path) -> Child:
    """The plan's service on a free port (``pool`` 0: letta-client's default pool)."""
    return Child(
        "bench.comparator_app",
        "--letta",
        emulator_url,
        "--pool",
        str(pool),
        health="/health",
        log=log,
        python=ensure_venv(),
    )
