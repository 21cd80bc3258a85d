"""Resuming a dropped stream against the real Letta (foreground runs; the service's own turn log in Redis).

The service's session fixture waits ``RESUME_GRACE`` seconds for a client that went away.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest
from letta_client import AsyncLetta

from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack
from pipeline.events import Done, Event, Text
from pipeline.sse import SSEParser
from pipeline.wire import parse_event
from tests.conftest import RESUME_GRACE, SERVICE_TOKEN
from tests.pipe.harness import make_pipe
from tests.scripted_llm import expected_answer

from .service_api import new_agent
from .tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PROMPT = "[long 150] [slow 20] tell me a long story"


async def read(
    http: httpx.AsyncClient, body: dict[str, Any], *, last_id: str | None = None, stop_at_chars: int | None = None
) -> tuple[list[Event], str]:
    """Complete events of one ``/chat/stream`` request and the last id; stop reading (drop) after some text."""
    parser, events = SSEParser(), []
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with http.stream("POST", "/chat/stream", json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_bytes():
            for sse in parser.feed(chunk):
                event = parse_event(sse.data)
                if event is not None:
                    events.append(event)
            if stop_at_chars is not None and len(text(events)) >= stop_at_chars:
                break  # leaving the block closes the connection mid-answer
    return events, parser.decoder.last_event_id


def text(events: list[Event]) -> str:
    return "".join(e.content for e in events if isinstance(e, Text))


async def latest_run(letta_stack: LocalStack, agent_id: str) -> str:
    """The agent's one run (the tests' agents are fresh), waited for until Letta lists it."""
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        for _ in range(50):
            runs = [r async for r in letta.runs.list(agent_id=agent_id)]
            if runs:
                assert len(runs) == 1, [r.id for r in runs]
                return runs[0].id
            await anyio.sleep(0.1)
    raise AssertionError(f"no run of {agent_id}")


async def run_status(letta_stack: LocalStack, run_id: str) -> str | None:
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        return (await letta.runs.retrieve(run_id)).status


async def wait_status(letta_stack: LocalStack, run_id: str, want: str, within: float) -> tuple[str | None, float]:
    began = time.monotonic()
    status = None
    while time.monotonic() - began < within:
        status = await run_status(letta_stack, run_id)
        if status == want:
            break
        await anyio.sleep(0.1)
    return status, time.monotonic() - began


async def test_a_dropped_stream_resumes_the_same_turn_with_nothing_repeated_or_lost(
    http: httpx.AsyncClient, letta_stack: LocalStack
) -> None:
    agent_id = await new_agent(http, "resuming-student")
    body = {"agent_id": agent_id, "message": PROMPT}
    first, last_id = await read(http, body, stop_at_chars=40)
    assert last_id.startswith("turn-")
    run_id = await latest_run(letta_stack, agent_id)
    assert 40 <= len(text(first)) < len(expected_answer(PROMPT))
    assert await run_status(letta_stack, run_id) == "running"  # dropped, not stopped

    second, _ = await read(http, body, last_id=last_id)

    assert text(first) + text(second) == expected_answer(PROMPT)
    assert isinstance(second[-1], Done)
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        runs = [r async for r in letta.runs.list(agent_id=agent_id)]
    assert [r.id for r in runs] == [run_id]  # one turn: the message was not sent again
    status, _ = await wait_status(letta_stack, run_id, "completed", 5)
    assert status == "completed"
    again = await http.post("/chat", json={"agent_id": agent_id, "message": "and now?"})
    assert again.status_code == 200  # the agent is free once the resumed turn ended


async def test_a_client_that_never_comes_back_has_its_run_cancelled_after_the_grace(
    http: httpx.AsyncClient, letta_stack: LocalStack, service: ServiceThread
) -> None:
    agent_id = await new_agent(http, "vanishing-student")
    idle_tasks = service.task_count()
    await read(http, {"agent_id": agent_id, "message": "[long 400] [slow 30] go"}, stop_at_chars=20)
    run_id = await latest_run(letta_stack, agent_id)
    await anyio.sleep(0.5)
    assert await run_status(letta_stack, run_id) == "running"
    refused = await http.post("/chat/stream", json={"agent_id": agent_id, "message": "hello?"})
    assert refused.status_code == 409  # the detached turn still owns the agent

    status, waited = await wait_status(letta_stack, run_id, "cancelled", RESUME_GRACE + 10)

    print(f"\ndetached run cancelled {waited:.1f} s after the drop (grace {RESUME_GRACE} s)")
    assert status == "cancelled"
    assert waited >= RESUME_GRACE - 1.0  # not before the grace was over
    assert service.task_count() <= idle_tasks


async def test_the_pipe_rides_out_a_dropped_connection(service: ServiceThread, letta_stack: LocalStack) -> None:
    """pipe → (a network that drops) → service → Letta: the student sees the whole answer once."""
    port = int(service.url.rsplit(":", 1)[1])
    async with anyio.create_task_group() as tg:
        proxy = await tg.start(TcpProxy(port).run)
        pipe = make_pipe(f"http://127.0.0.1:{proxy.port}", SERVICE_TOKEN=SERVICE_TOKEN)
        user = {"id": "commuting-student", "name": "Ada", "valves": pipe.UserValves()}
        body = {"model": "letta_tutor", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
        statuses: list[dict[str, Any]] = []

        async def emit(event: dict[str, Any]) -> None:
            statuses.append(event)

        chunks, dropped = [], 0
        usages: list[Any] = []
        result = await pipe.pipe(body, __user__=user, __metadata__={"chat_id": "c"}, __event_emitter__=emit)
        assert not isinstance(result, str)
        with anyio.fail_after(60):
            async for chunk in result:
                if "choices" not in chunk:  # the turn's usage, once at the end
                    usages.append(chunk["usage"])
                    continue
                chunks.append(chunk["choices"][0]["delta"].get("content", ""))
                if len("".join(chunks)) >= 60 and not dropped:
                    dropped = proxy.drop_connections()
        tg.cancel_scope.cancel()
    assert dropped == 1
    assert "".join(chunks) == expected_answer(PROMPT)
    assert len(usages) == 1, usages  # the turn's usage once, although the stream was resumed
    assert statuses[-1]["data"] == {"description": "Done", "done": True, "hidden": True}
