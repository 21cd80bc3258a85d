"""A Debian package's binary, installed with apt-get when missing (as root, or through passwordless sudo)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from devstack._proc import StackError, base_env

# apt's "never heard of it" answers: only then is an `apt-get update` worth its time.
_UNKNOWN_PACKAGE = ("Unable to locate package", "has no installation candidate")


def find_binary(name: str, debian_path: Path) -> Path | None:
    """``name`` on PATH, else ``debian_path`` when executable, else None."""
    found = shutil.which(name)
    if found:
        return Path(found)
    return debian_path if os.access(debian_path, os.X_OK) else None


def privilege_prefix() -> list[str] | None:
    """``[]`` as root, ``["sudo", "-n"]`` with passwordless sudo, else None."""
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo is None:
        return None
    probe = subprocess.run([sudo, "-n", "true"], capture_output=True, check=False, stdin=subprocess.DEVNULL)
    return [sudo, "-n"] if probe.returncode == 0 else None


def apt_get(prefix: list[str], args: list[str], log: Path) -> tuple[int, str]:
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


def ensure_debian_binary(package: str, name: str, debian_path: Path, log: Path) -> Path:
    """The binary ``name`` of Debian's ``package``, installed with apt-get first when missing.

    ``apt-get update`` runs only when the install fails because the package is unknown
    (a fresh image with empty lists).  Raises ``StackError`` saying what to install when
    that is impossible here (no apt-get, or neither root nor passwordless sudo) or when
    apt-get fails (with its output's tail).
    """
    binary = find_binary(name, debian_path)
    if binary is not None:
        return binary
    hint = f"apt-get install -y --no-install-recommends {package}"
    prefix = privilege_prefix()
    if shutil.which("apt-get") is None or prefix is None:
        why = "no apt-get on this machine" if shutil.which("apt-get") is None else "not root and no passwordless sudo"
        raise StackError(
            f"{name} is not installed and cannot be installed from here ({why}).\nInstall it as root: {hint}"
        )
    install = ["install", "-y", "--no-install-recommends", package]
    code, output = apt_get(prefix, install, log)
    if code != 0 and any(marker in output for marker in _UNKNOWN_PACKAGE):
        apt_get(prefix, ["update"], log)
        code, output = apt_get(prefix, install, log)
    binary = find_binary(name, debian_path)
    if code != 0 or binary is None:
        tail = "\n".join(output.splitlines()[-30:])
        raise StackError(f"installing {package} failed (exit {code}); install it by hand: {hint}\n{tail}")
    return binary
