"""Two replicas behind a real HAProxy, sharing turn state through a real Redis, in front of a real Letta.

Each replica is a launcher process (``python -m app.launch``, one worker each here: the
replicas are the processes under test), started as deployed; ``X-Served-By`` tells which
one answered.  Every guarantee about a turn must hold across them: one agent per student,
one turn per agent, a resume through the other replica, the stop button through the other
replica, a replica that dies (SIGKILL) or stops (SIGTERM) mid-answer.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from letta_client import AsyncLetta

from devstack.replicas import Replicas, served_by
from devstack.stack import LocalStack
from pipeline.events import Done, Event, Text
from pipeline.sse import SSEParser
from pipeline.wire import parse_event
from tests.conftest import SERVICE_TOKEN
from tests.pipe.harness import make_pipe
from tests.scripted_llm import expected_answer

from .service_api import new_agent

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GRACE = 3.0
LEASE = 3.0
LONG = "[long 120] [slow 40] tell me a long story"  # ~5 s of answer


@pytest.fixture(scope="module")
def replicas(letta_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    env = {
        **os.environ,
        "LETTA_BASE_URL": letta_stack.letta_url,
        "LETTA_MODEL": letta_stack.model_handle,
        "LETTA_EMBEDDING": letta_stack.embedding_handle,
        "SERVICE_TOKEN": SERVICE_TOKEN,
        "REDIS_URL": letta_stack.redis_url,
        "STREAM_RESUME_GRACE_SECONDS": str(GRACE),
        "TURN_LEASE_SECONDS": str(LEASE),
        "STREAM_KEEPALIVE_SECONDS": "1",
        "DRAIN_SECONDS": "2",
    }
    with Replicas(2, env, tmp_path_factory.mktemp("replicas"), workers=1) as running:
        yield running


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})


@pytest.fixture
async def via(replicas: Replicas) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """Clients of the balancer ("lb") and of each replica directly ("a", "b")."""
    async with client(replicas.url) as lb, client(replicas.replica_urls[0]) as a, client(replicas.replica_urls[1]) as b:
        yield {"lb": lb, "a": a, "b": b}


async def read(
    http: httpx.AsyncClient, body: dict[str, Any], *, last_id: str | None = None, stop_at_chars: int | None = None
) -> tuple[list[Event], str, str]:
    """Complete events of one stream, its last id, and who served it; drop after ``stop_at_chars`` of text."""
    parser, events = SSEParser(), []
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with http.stream("POST", "/chat/stream", json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        by = served_by(response)
        async for chunk in response.aiter_bytes():
            for sse in parser.feed(chunk):
                event = parse_event(sse.data)
                if event is not None:
                    events.append(event)
            if stop_at_chars is not None and len(text(events)) >= stop_at_chars:
                break
    return events, parser.decoder.last_event_id, by


def text(events: list[Event]) -> str:
    return "".join(e.content for e in events if isinstance(e, Text))


async def runs_of(letta_stack: LocalStack, agent_id: str) -> list[Any]:
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        return [r async for r in letta.runs.list(agent_id=agent_id)]


async def wait_run(letta_stack: LocalStack, agent_id: str, within: float = 10) -> str:
    for _ in range(int(within * 10)):
        runs = await runs_of(letta_stack, agent_id)
        if runs:
            return str(runs[0].id)
        await anyio.sleep(0.1)
    raise AssertionError("no run")


async def wait_status(letta_stack: LocalStack, run_id: str, want: str, within: float) -> tuple[str | None, float]:
    began, status = time.monotonic(), None
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        while time.monotonic() - began < within:
            status = (await letta.runs.retrieve(run_id)).status
            if status == want:
                break
            await anyio.sleep(0.1)
    return status, time.monotonic() - began


async def test_concurrent_creates_through_the_balancer_make_one_agent(
    via: dict[str, httpx.AsyncClient], letta_stack: LocalStack
) -> None:
    user = f"crowd-{time.monotonic_ns()}"
    answers: list[httpx.Response] = []

    async def create(http: httpx.AsyncClient) -> None:
        answers.append(await http.post("/agents", json={"user_id": user}))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(create, via["a"] if i % 2 else via["b"])
    assert all(r.status_code in (200, 201) for r in answers), [r.text for r in answers]
    assert len({r.json()["agent_id"] for r in answers}) == 1
    assert [r.status_code for r in answers].count(201) == 1
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        found = [a async for a in letta.agents.list(tags=[f"user:{user}"], match_all_tags=True)]
    assert len(found) == 1


async def test_a_second_message_through_the_other_replica_is_409(
    via: dict[str, httpx.AsyncClient], letta_stack: LocalStack
) -> None:
    agent_id = await new_agent(via["lb"], "busy-across")
    async with anyio.create_task_group() as tg:
        tg.start_soon(read, via["a"], {"agent_id": agent_id, "message": "[long 40] [slow 30] hi"})
        await wait_run(letta_stack, agent_id)
        refused = await via["b"].post("/chat/stream", json={"agent_id": agent_id, "message": "again"})
        assert refused.status_code == 409
        assert refused.json()["error"] == "turn_in_progress"
    assert len(await runs_of(letta_stack, agent_id)) == 1


async def test_drop_on_a_resume_on_b_is_exact_and_not_cancelled_by_a(
    via: dict[str, httpx.AsyncClient], letta_stack: LocalStack
) -> None:
    agent_id = await new_agent(via["lb"], "commuter")
    body = {"agent_id": agent_id, "message": LONG}
    first, last_id, by_a = await read(via["a"], body, stop_at_chars=40)
    second, _, by_b = await read(via["b"], body, last_id=last_id)
    assert by_a != by_b
    assert text(first) + text(second) == expected_answer(LONG)
    assert isinstance(second[-1], Done)
    assert second[-1].stop_reason == "end_turn"
    run_id = await wait_run(letta_stack, agent_id)
    status, _ = await wait_status(letta_stack, run_id, "completed", 5)
    assert status == "completed"
    assert len(await runs_of(letta_stack, agent_id)) == 1


async def test_drop_before_any_text_resumes_exactly(via: dict[str, httpx.AsyncClient]) -> None:
    agent_id = await new_agent(via["lb"], "early-drop")
    body = {"agent_id": agent_id, "message": "[think] [long 30] [slow 30] go"}
    parser = SSEParser()
    async with via["a"].stream("POST", "/chat/stream", json=body) as response:
        async for chunk in response.aiter_bytes():
            parser.feed(chunk)
            if parser.decoder.last_event_id:
                break  # the opening frame: an id, no text yet
    last_id = parser.decoder.last_event_id
    assert last_id.endswith(":0")
    rest, _, _ = await read(via["b"], body, last_id=last_id)
    assert text(rest) == expected_answer(body["message"])


async def test_stop_through_b_cancels_the_turn_streaming_on_a(
    via: dict[str, httpx.AsyncClient], letta_stack: LocalStack
) -> None:
    agent_id = await new_agent(via["lb"], "stopper")
    async with anyio.create_task_group() as tg:
        tg.start_soon(read, via["a"], {"agent_id": agent_id, "message": "[long 400] [slow 30] go"})
        run_id = await wait_run(letta_stack, agent_id)
        await anyio.sleep(0.5)
        began = time.monotonic()
        stopped = await via["b"].post("/chat/cancel", json={"agent_id": agent_id})
        assert stopped.status_code == 202
        status, waited = await wait_status(letta_stack, run_id, "cancelled", 5)
        print(f"\nstop through the other replica: run cancelled after {time.monotonic() - began:.2f} s")
        assert status == "cancelled"
        assert waited < 2.0


async def test_every_redis_key_of_ours_has_an_end(replicas: Replicas, letta_stack: LocalStack) -> None:
    import coredis

    redis = coredis.Redis(host="127.0.0.1", port=letta_stack.redis_port)
    async with redis:
        keys = [k async for k in redis.scan_iter(match="letta-stream:*")]
        assert keys, "the tests above left turn logs behind (kept for resumes), so there are keys to check"
        without_end = [k for k in keys if await redis.pttl(k) < 0]
    assert without_end == []


async def test_kill_9_of_the_runner_mid_answer_the_pipe_gets_the_whole_answer_through_the_other(
    replicas: Replicas, letta_stack: LocalStack
) -> None:
    """The runner's replica dies; the pipe reconnects through the balancer; the other replica takes over."""
    pipe = make_pipe(replicas.url, SERVICE_TOKEN=SERVICE_TOKEN)
    user = {"id": f"victim-{time.monotonic_ns()}", "name": "Ada", "valves": pipe.UserValves()}
    body = {"model": "letta_tutor", "stream": True, "messages": [{"role": "user", "content": LONG}]}
    chunks: list[str] = []
    usages: list[Any] = []
    killed = None
    result = await pipe.pipe(body, __user__=user, __metadata__={"chat_id": "c"})
    assert not isinstance(result, str)
    async with client(replicas.url) as lb:
        agent_id = await new_agent(lb, user["id"])
    with anyio.fail_after(90):
        async for chunk in result:
            if "choices" not in chunk:  # the turn's usage, once at the end
                usages.append(chunk["usage"])
                continue
            chunks.append(chunk["choices"][0]["delta"].get("content", ""))
            if len("".join(chunks)) >= 60 and killed is None:
                killed = await _kill_runner(replicas, letta_stack, agent_id)
    assert killed is not None
    try:
        assert "".join(chunks) == expected_answer(LONG)
        assert len(usages) <= 1, usages  # never twice (a taken-over turn may not know it)
        [run] = await runs_of(letta_stack, agent_id)
        assert run.conversation_id is not None  # the pipe's chat: the takeover read a conversation's run
    finally:
        replicas.restart(killed)


async def _kill_runner(replicas: Replicas, letta_stack: LocalStack, agent_id: str) -> int:
    """SIGKILL the replica whose process owns the agent's turn (as the shared record names it)."""
    from app.store.redis import RedisStore

    store = RedisStore.from_url(letta_stack.redis_url)
    try:
        record = await store.record(agent_id)
    finally:
        await store.aclose()
    assert record is not None, "the turn's record is in Redis"
    assert record.owner is not None
    owner_pid = int(record.owner.split(":")[1])
    for i, service in enumerate(replicas.services):
        if owner_pid in service.worker_pids() or owner_pid == service.pid:
            replicas.kill(i, signal.SIGKILL)
            return i
    raise AssertionError(f"no replica runs pid {owner_pid}")


async def test_kill_9_while_the_agent_is_claimed_frees_it_within_the_lease(
    replicas: Replicas, via: dict[str, httpx.AsyncClient], letta_stack: LocalStack
) -> None:
    agent_id = await new_agent(via["lb"], "orphan")
    async with via["a"].stream("POST", "/chat/stream", json={"agent_id": agent_id, "message": LONG}) as response:
        assert response.status_code == 200
        async for _ in response.aiter_bytes():
            break
        await wait_run(letta_stack, agent_id)
        replicas.kill(0, signal.SIGKILL)
    try:
        began = time.monotonic()
        while True:
            again = await via["b"].post("/chat", json={"agent_id": agent_id, "message": "[long 3] hello?"})
            if again.status_code == 200 or time.monotonic() - began > LEASE + 5:
                break
            assert again.status_code == 409
            await anyio.sleep(0.25)
        print(f"\nagent free {time.monotonic() - began:.1f} s after its replica was killed (lease {LEASE} s)")
        assert again.status_code == 200
    finally:
        replicas.restart(0)


async def test_sigterm_to_one_replica_ends_its_streams_resumably_and_the_other_serves_the_rest(
    replicas: Replicas, via: dict[str, httpx.AsyncClient]
) -> None:
    agent_id = await new_agent(via["lb"], "rolling")
    body = {"agent_id": agent_id, "message": LONG}
    parser, events, signalled = SSEParser(), [], False
    with anyio.fail_after(30):
        async with via["a"].stream("POST", "/chat/stream", json=body) as response:
            async for chunk in response.aiter_bytes():
                for sse in parser.feed(chunk):
                    event = parse_event(sse.data)
                    if event is not None:
                        events.append(event)
                if len(text(events)) >= 40 and not signalled:
                    replicas.kill(0, signal.SIGTERM)
                    signalled = True
    assert signalled
    assert not any(isinstance(e, Done) for e in events)  # ended without a terminal event: resumable
    try:
        assert (await via["b"].get("/live")).status_code == 200  # the other replica keeps serving
        rest, _, _ = await read(via["b"], body, last_id=parser.decoder.last_event_id)
        assert text(events) + text(rest) == expected_answer(LONG)
    finally:
        replicas.restart(0)


async def test_a_rolling_restart_of_both_replicas_loses_no_answer(replicas: Replicas, letta_stack: LocalStack) -> None:
    """The pipe streams a long answer through the balancer while each replica in turn is stopped (SIGTERM,
    drained) and started again: every restart ends the stream resumably, the pipe resumes through the other."""
    prompt = "[long 300] [slow 40] a very long story"  # ~12 s of answer: both restarts fall inside it
    pipe = make_pipe(replicas.url, SERVICE_TOKEN=SERVICE_TOKEN)
    user = {"id": f"rolling-{time.monotonic_ns()}", "name": "Ada", "valves": pipe.UserValves()}
    body = {"model": "letta_tutor", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    chunks: list[str] = []
    usages: list[Any] = []
    restarted: list[int] = []
    restarting = False

    async def restart_all() -> None:
        for i in range(2):
            await anyio.to_thread.run_sync(replicas.restart, i)
            restarted.append(i)

    result = await pipe.pipe(body, __user__=user, __metadata__={"chat_id": "c"})
    assert not isinstance(result, str)
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            async for chunk in result:
                if "choices" not in chunk:  # the turn's usage, once at the end
                    usages.append(chunk["usage"])
                    continue
                chunks.append(chunk["choices"][0]["delta"].get("content", ""))
                if len("".join(chunks)) >= 40 and not restarting:
                    restarting = True
                    tg.start_soon(restart_all)
    assert restarted == [0, 1]
    assert "".join(chunks) == expected_answer(prompt)
    assert len(usages) <= 1, usages  # never twice (a taken-over turn may not know it)
    async with client(replicas.url) as lb:
        agent_id = await new_agent(lb, user["id"])
    assert len(await runs_of(letta_stack, agent_id)) == 1  # the message was sent once
