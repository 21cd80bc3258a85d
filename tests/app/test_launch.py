"""``python -m app.launch``: worker processes on shared sockets, metrics summed over them, drained on SIGTERM.

Real processes against the bench's Letta-API emulator (no Letta server needed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.launch import main
from bench.letta_emulator import parse_stamps
from devstack._proc import free_port, wait_http_ok
from devstack.replicas import REPO_ROOT, ServiceProcess, launcher_workers, served_by, session_members
from pipeline.events import Done, Text
from pipeline.sse import decode_events

GRACEFUL_TIMEOUT = 10  # hypercorn.toml


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.letta_emulator", "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/v1/health/", 30, lambda: proc.poll() is None, "emulator", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def service_env(letta_url: str, **extra: str) -> dict[str, str]:
    drop = {"SERVICE_TOKEN", "SERVICE_AUTH", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return env | {"SERVICE_AUTH": "off", "LETTA_BASE_URL": letta_url} | extra


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise KeyError(name)


def no_processes_left(service: ServiceProcess, within: float = 5.0) -> bool:
    """Nothing of the launcher's session is left (its resource tracker leaves just after it)."""
    deadline = time.monotonic() + within
    while session_members(service.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not session_members(service.pid)


def pid_of(response: httpx.Response) -> int:
    return int(served_by(response).rsplit(":", 1)[1])


def test_workers_share_the_port_count_together_and_drain_on_sigterm(emulator: str, tmp_path: Path) -> None:
    spec = {"n": 1, "prefix": "launch", "agent": {"tags": ["letta-stream", "agent_type:tutor"]}}
    agent_id = httpx.post(f"{emulator}/bench/agents", json=spec, timeout=10).json()[0]
    service = ServiceProcess(free_port(), service_env(emulator), tmp_path / "launch.log")  # hypercorn.toml: 2 workers
    service.start()
    try:
        workers = service.worker_pids()
        assert len(workers) == 2, service.log_text()
        seen: set[int] = set()
        stops = 0

        def stop_button(_: int) -> httpx.Response:  # a fresh connection each: the kernel picks the worker
            return httpx.post(f"{service.url}/chat/cancel", json={"agent_id": agent_id}, timeout=10)

        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(8) as pool:
            while seen != set(workers) and time.monotonic() < deadline:
                for response in pool.map(stop_button, range(16)):
                    assert response.status_code == 202, response.text
                    seen.add(pid_of(response))
                    stops += 1
        assert seen == set(workers)  # both workers answered
        for _ in range(4):  # whichever worker renders /metrics shows both workers' counts
            text = httpx.get(f"{service.url}/metrics", timeout=10).text
            assert metric(text, "letta_stream_stops_total") == stops

        began = time.monotonic()
        service.signal(signal.SIGTERM)
        assert service.wait(GRACEFUL_TIMEOUT) == 0
        took = time.monotonic() - began
        log = service.log_text()
        for pid in workers:
            assert f"[{pid}] [INFO] launch: drained in" in log, log  # each worker drained its app first
            assert f"worker {pid} stopped" in log
        assert no_processes_left(service)
        print(f"stopped {took:.1f} s after SIGTERM")
    finally:
        service.stop()


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    service = ServiceProcess(free_port(), service_env(closed_port_url()), tmp_path / "launch.log", workers=2)
    service.start()
    try:
        first, second = service.worker_pids()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = service.worker_pids()
            if len(workers) == 2 and first not in workers and f"worker {workers[-1]} serving" in service.log_text():
                break
            time.sleep(0.2)
        assert second in workers, service.log_text()
        assert first not in workers
        assert len(workers) == 2
        assert f"worker {first} exited (-9) while serving: starting another" in service.log_text()
        assert httpx.get(f"{service.url}/health", timeout=10).status_code == 503  # serving (Letta is not there)
    finally:
        service.stop()
    assert service.proc is not None
    assert service.proc.returncode == 0


def test_workers_stop_when_the_launcher_is_killed(tmp_path: Path) -> None:
    service = ServiceProcess(free_port(), service_env(closed_port_url()), tmp_path / "launch.log", workers=2)
    service.start()
    try:
        workers = service.worker_pids()
        service.signal(signal.SIGKILL)  # the launcher alone
        deadline = time.monotonic() + GRACEFUL_TIMEOUT * 2
        while any(pid in session_members(service.pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert no_processes_left(service)  # no orphan keeps serving
        assert "the launcher is gone; stopping" in service.log_text()
    finally:
        service.stop()


def test_a_bad_setting_stops_the_launcher_with_its_message(tmp_path: Path) -> None:
    env = {k: v for k, v in service_env(closed_port_url()).items() if k != "SERVICE_AUTH"}
    cmd = [sys.executable, "-m", "app.launch", "--bind", f"127.0.0.1:{free_port()}", "--workers", "2"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1  # not restarted over and over
    assert "letta-stream is misconfigured: SERVICE_TOKEN is not set" in done.stderr
    assert done.stderr.count("before the app started: stopping") == 1


def test_a_bad_agents_file_stops_the_launcher_naming_the_file_the_type_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "agents.toml"
    bad.write_text('[[agent_type]]\nid = "coach"\nname = "Coach"\npersona = "I coach."\nhuman = "x"\nvoice = "calm"\n')
    env = service_env(closed_port_url(), AGENTS_FILE=str(bad))
    cmd = [sys.executable, "-m", "app.launch", "--bind", f"127.0.0.1:{free_port()}", "--workers", "2"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert f"agent types file {bad}: agent type 'coach': field 'voice': unknown field" in done.stderr
    assert done.stderr.count("before the app started: stopping") == 1


def test_in_process_serves_and_drains(tmp_path: Path) -> None:
    service = ServiceProcess(free_port(), service_env(closed_port_url()), tmp_path / "launch.log", workers=0)
    service.start()
    try:
        response = httpx.get(f"{service.url}/health", timeout=10)
        assert response.status_code == 503
        assert pid_of(response) == service.pid
        assert launcher_workers(service.pid) == []
        service.signal(signal.SIGTERM)
        assert service.wait(GRACEFUL_TIMEOUT) == 0
        assert "launch: drained in" in service.log_text()
    finally:
        service.stop()


def test_the_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    service = ServiceProcess(free_port(), service_env(closed_port_url()), tmp_path / "a.log", workers=1)
    service.start()
    try:
        cmd = [sys.executable, "-m", "app.launch", "--bind", f"127.0.0.1:{service.port}", "--workers", "2"]
        env = service_env(closed_port_url())
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2
        assert f"cannot listen on 127.0.0.1:{service.port}" in done.stderr
    finally:
        service.stop()


def test_uvloop_is_refused_clearly_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError, as when not installed
    config = tmp_path / "hypercorn.toml"
    config.write_text('bind = ["127.0.0.1:1"]\nworker_class = "uvloop"\nworkers = 2\n')
    assert main(["--config", str(config)]) == 2
    assert 'worker_class = "uvloop" but uvloop is not installed' in capsys.readouterr().err


def test_a_worker_on_uvloop_streams_a_whole_turn(emulator: str, tmp_path: Path) -> None:
    """``worker_class = "uvloop"``: the worker's loop is uvloop's, and the Letta transport's connections work on it."""
    spec = {"n": 1, "prefix": "uvloop", "agent": {"tags": ["letta-stream", "agent_type:tutor"]}}
    agent_id = httpx.post(f"{emulator}/bench/agents", json=spec, timeout=10).json()[0]
    config = tmp_path / "hypercorn.toml"
    config.write_text('bind = ["127.0.0.1:1"]\nworker_class = "uvloop"\nworkers = 1\n')
    service = ServiceProcess(free_port(), service_env(emulator), tmp_path / "launch.log", config=config)
    service.start()
    try:
        body = {"agent_id": agent_id, "message": "bench [count 50] [rate 500]"}
        with httpx.stream("POST", f"{service.url}/chat/stream", json=body, timeout=30) as response:
            assert response.status_code == 200, response.read()
            events = list(decode_events(response.iter_bytes()))
        text = "".join(e.content for e in events if isinstance(e, Text))
        assert [seq for seq, _ in parse_stamps(text)] == list(range(50)), events
        assert isinstance(events[-1], Done), events
    finally:
        service.stop()
