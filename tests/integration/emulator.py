"""The bench's Letta-API emulator as a fixture: an upstream that ``AsyncLetta`` talks to unchanged and that
counts the cancels it receives (``GET /bench/stats``), for tests Letta itself cannot serve (scale, shutdown)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from devstack.service_thread import free_port
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="session")
def emulator() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.letta_emulator", "--port", str(port)], cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
