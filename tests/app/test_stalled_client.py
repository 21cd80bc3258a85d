"""A client that stops reading, on real hypercorn: its stream ends after the send timeout, its run is
cancelled (at once with resume off, after the grace with it on), the agent is free, and no task is left
waiting on its full socket buffer — on asyncio's loop and on uvloop's (``worker_class = "uvloop"``)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import httpx
import pytest

from app.factory import create_app
from app.settings import Settings
from devstack.service_thread import ServiceThread

from .fake_letta import make_fake

SEND_TIMEOUT = 1.0


def post(port: int, path: str, body: dict[str, Any], *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    return sock


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def responses_being_written(service: ServiceThread) -> int:
    """Tasks on the server's loop that are inside Quart's response writing."""

    async def count() -> int:
        found = 0
        for task in asyncio.all_tasks():
            coro: Any = task.get_coro()
            while coro is not None:
                if getattr(coro, "__qualname__", "").endswith("_send_response"):
                    found += 1
                    break
                coro = getattr(coro, "cr_await", None)
        return found

    found: int = service.run(count())
    return found


@pytest.mark.parametrize("worker_class", ["asyncio", "uvloop"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_client_that_reads_nothing_is_cut_off_and_leaves_nothing_behind(resume: bool, worker_class: str) -> None:
    letta = make_fake()
    letta.agents.messages.reply = [f" word{i}" * 20 for i in range(100_000)]  # ~14 MB: more than any socket buffer
    letta.store.hold_after = 90_000  # the run is still going when the stream is cut off (~12 MB in)
    settings = Settings(send_timeout=SEND_TIMEOUT, throttle_window=0.0, resume=resume, resume_grace=0.5)
    app = create_app(settings, client=letta)
    with ServiceThread(app=app, worker_class=worker_class) as service:
        svc = app.extensions["letta_stream"]
        assert type(service.run(_running_loop())).__module__.split(".")[0] == worker_class

        def busy(agent_id: str) -> bool:
            return service.run(svc.host.store.record(agent_id)) is not None

        agent_id = httpx.post(f"{service.url}/agents", json={"user_id": "ada"}).json()["agent_id"]
        time.sleep(0.5)  # the agent request's connection closes
        idle = service.task_count()
        stalled = post(service.port, "/chat/stream", {"agent_id": agent_id, "message": "go"})
        try:
            began = time.monotonic()
            while time.monotonic() - began < 20 and (
                not letta.agents.messages.cancelled
                or service.task_count() > idle
                or busy(agent_id)
                or responses_being_written(service)
            ):
                time.sleep(0.05)
            took = time.monotonic() - began
            print(f"\nstalled stream ended and its tasks were gone {took:.1f} s after it started")
            assert svc.metrics.ended["cancelled"] == 1
            assert responses_being_written(service) == 0  # not even the response's last write is left waiting
            assert service.task_count() <= idle
            assert letta.agents.messages.cancelled == [agent_id]  # at once, or after the resume grace
            assert not busy(agent_id)
            assert svc.host.running == 0
            assert [run.status for run in letta.store.runs.values()] == ["cancelled"]
        finally:
            stalled.close()
