"""``hypercorn app:app -c hypercorn.toml`` (hypercorn's own CLI and worker processes): it starts when configured,
refuses when not.  The launcher that deploys the service (``python -m app.launch``) is tested in test_launch.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devstack.replicas import launcher_workers
from devstack.service_thread import free_port

ROOT = Path(__file__).resolve().parents[2]


def hypercorn(port: int, **env: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if k not in {"SERVICE_TOKEN", "SERVICE_AUTH"}} | env
    cmd = [sys.executable, "-m", "hypercorn", "app:app", "-c", "hypercorn.toml", "-b", f"127.0.0.1:{port}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_configured_service_serves_and_requires_its_token() -> None:
    port = free_port()
    proc = hypercorn(port, SERVICE_TOKEN="entry-token", LETTA_BASE_URL=f"http://127.0.0.1:{free_port()}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "hypercorn did not start"
                time.sleep(0.2)
        assert health.status_code == 503  # up, but no Letta behind it
        assert len(launcher_workers(proc.pid)) == 2  # hypercorn.toml's workers, as hypercorn's own processes
        assert httpx.get(f"http://127.0.0.1:{port}/agents?user_id=u", timeout=5).status_code == 401
        authorized = {"Authorization": "Bearer entry-token"}
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", headers=authorized, timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)


def test_missing_token_stops_the_server_with_a_clear_message() -> None:
    proc = hypercorn(free_port())
    out, _ = proc.communicate(timeout=30)  # it exits instead of serving (hypercorn 0.18 exits with status 0)
    assert b"letta-stream is misconfigured: SERVICE_TOKEN is not set" in out


def test_a_bad_agents_file_stops_the_server_naming_the_file_the_type_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "agents.toml"
    bad.write_text('[[agent_type]]\nid = "tutor"\nname = "Tutor"\nhuman = "Name: {name}."\n')  # no persona
    proc = hypercorn(free_port(), SERVICE_TOKEN="entry-token", AGENTS_FILE=str(bad))
    out, _ = proc.communicate(timeout=30)  # exits instead of serving (status 0: hypercorn's, as above)
    assert f"letta-stream is misconfigured: agent types file {bad}: agent type 'tutor': field 'persona'" in out.decode()
