"""SIGTERM to the launcher (``python -m app.launch``): open streams end resumably (a comment saying so, no terminal
event), their runs are handed off — not cancelled — and the server exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anyio
import httpx
import pytest

from devstack.service_thread import free_port
from pipeline.sse import SSEParser
from pipeline.wire import parse_event
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_sigterm_ends_open_streams_resumably_and_cancels_nothing(emulator: str) -> None:
    async with httpx.AsyncClient(base_url=emulator, timeout=30) as letta:
        spec = {"n": 3, "prefix": "shutdown", "agent": {"tags": ["letta-stream", "agent_type:tutor"]}}
        agent_ids: list[str] = (await letta.post("/bench/agents", json=spec)).json()
        cancels_before = (await letta.get("/bench/stats")).json()["cancels"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_TOKEN"} | {
        "SERVICE_AUTH": "off",
        "LETTA_BASE_URL": emulator,
        "DRAIN_SECONDS": "1",
    }
    cmd = [sys.executable, "-m", "app.launch", "--bind", f"127.0.0.1:{port}"]
    proc = await anyio.open_process(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        with anyio.fail_after(30):
            while True:
                try:
                    async with httpx.AsyncClient() as probe:
                        await probe.get(url + "/health")
                    break
                except httpx.TransportError:
                    await anyio.sleep(0.2)
        finals: dict[str, object] = {}
        tails: dict[str, bytes] = {}
        opened = 0
        all_open = anyio.Event()

        async def student(agent_id: str) -> None:
            nonlocal opened
            parser, last, tail = SSEParser(), None, b""
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                body = {"agent_id": agent_id, "message": "[keepalive 0.5] listening"}
                async with http.stream("POST", "/chat/stream", json=body) as response:
                    assert response.status_code == 200
                    chunks = response.aiter_bytes()
                    async for chunk in chunks:
                        if b": keepalive" in chunk and last is None and agent_id not in finals:
                            opened += 1
                            if opened == len(agent_ids):
                                all_open.set()
                        tail = (tail + chunk)[-200:]
                        for sse in parser.feed(chunk):
                            last = parse_event(sse.data)
            finals[agent_id] = last  # the stream ended: what was its last event?
            tails[agent_id] = tail

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for agent_id in agent_ids:
                    tg.start_soon(student, agent_id)
                await all_open.wait()
                began = time.monotonic()
                proc.send_signal(signal.SIGTERM)
        ended_after = time.monotonic() - began
        assert set(finals) == set(agent_ids)
        assert all(e is None for e in finals.values()), finals  # no terminal event: the client resumes elsewhere
        assert all(b"the service is restarting" in t for t in tails.values()), tails
        with anyio.fail_after(20):
            await proc.wait()  # and the server exits
        async with httpx.AsyncClient(base_url=emulator) as letta:
            cancels = (await letta.get("/bench/stats")).json()["cancels"] - cancels_before
        assert cancels == 0  # handed off, not cancelled: a resume through another replica gets the rest
        print(f"streams ended {ended_after * 1000:.0f} ms after SIGTERM")
        assert ended_after < 5  # well before hypercorn's graceful_timeout (10 s) would cut them
    finally:
        if proc.returncode is None:
            proc.kill()
            with anyio.move_on_after(10, shield=True):
                await proc.wait()
