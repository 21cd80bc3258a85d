"""The OpenWebUI pipe → the real service → letta-client → the real Letta server → Postgres."""

from __future__ import annotations

import time

import anyio
import pytest
from letta_client import AsyncLetta

from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack
from tests.conftest import RESUME_GRACE, SERVICE_TOKEN
from tests.pipe.harness import make_pipe, run_pipe
from tests.scripted_llm import REASONING, expected_answer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_pipe_streams_thinking_tool_status_and_the_answer(service: ServiceThread) -> None:
    prompt = "[think] [tool] What did we talk about?"
    outcome = await run_pipe(make_pipe(service.url, SERVICE_TOKEN=SERVICE_TOKEN), prompt, user_id="pipe-student")
    assert outcome.reasoning == REASONING
    assert outcome.content == expected_answer(prompt)
    # reasoning is shown natively ("Thinking…" in OpenWebUI's block): the status line does not repeat it
    assert outcome.descriptions[0] == "Using conversation_search..."
    assert "Thinking..." not in outcome.descriptions
    assert outcome.statuses[-1]["data"] == {"description": "Done", "done": True, "hidden": True}
    assert len([d for d in outcome.deltas if "content" in d]) >= 1
    # the turn's usage as Letta reported it, once: two model calls (the tool call, then the answer), 100
    # prompt tokens and one completion token per answer word each, as the scripted model counts
    words = len(expected_answer(prompt).split())
    assert outcome.usages == [{"prompt_tokens": 200, "completion_tokens": 2 * words, "total_tokens": 200 + 2 * words}]
    assert "usage" in outcome.chunks[-1]


async def test_pipe_says_thinking_when_reasoning_is_hidden(service: ServiceThread) -> None:
    prompt = "[think] Quick question"
    outcome = await run_pipe(
        make_pipe(service.url, SERVICE_TOKEN=SERVICE_TOKEN), prompt, user_id="pipe-student-2", show_reasoning=False
    )
    assert outcome.reasoning == ""
    assert outcome.descriptions[0] == "Thinking..."
    assert outcome.content == expected_answer(prompt)


async def test_same_student_keeps_one_agent(service: ServiceThread, letta_stack: LocalStack) -> None:
    for _ in range(2):
        await run_pipe(make_pipe(service.url, SERVICE_TOKEN=SERVICE_TOKEN), "hello", user_id="returning-student")
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        agents = [a async for a in letta.agents.list(tags=["user:returning-student"], match_all_tags=True)]
    assert len(agents) == 1


async def test_stop_button_cancels_the_letta_run(service: ServiceThread, letta_stack: LocalStack) -> None:
    """OpenWebUI's stop cancels the generator; the pipe asks the service to cancel Letta's run at once
    (a merely dropped connection would keep it running for the resume grace period)."""
    outcome = await run_pipe(
        make_pipe(service.url, SERVICE_TOKEN=SERVICE_TOKEN),
        "[long 400] [slow 30] tell me everything",
        user_id="stopping-student",
        stop_after_chunks=3,
    )
    assert len(outcome.chunks) == 3
    assert outcome.statuses[-1]["data"] == {"description": "Stopped", "done": True, "hidden": False}
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        agent = await anext(a async for a in letta.agents.list(tags=["user:stopping-student"], match_all_tags=True))
        run = await anext(r async for r in letta.runs.list(agent_id=agent.id))
        deadline, status = time.monotonic() + RESUME_GRACE / 2, None
        while time.monotonic() < deadline:
            status = (await letta.runs.retrieve(run.id)).status
            if status == "cancelled":
                break
            await anyio.sleep(0.1)
    assert status == "cancelled"
