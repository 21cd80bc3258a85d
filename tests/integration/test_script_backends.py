"""``python -m pipeline`` reuses the stages from a plain script, under asyncio and under trio, on real Letta."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest

from devstack.stack import LocalStack
from tests.scripted_llm import REASONING, expected_answer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def run_script(*args: str) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(120):
        return await anyio.run_process([sys.executable, "-m", "pipeline", *args], check=False)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_terminal_chat_streams_the_reply(backend: str, agent_id: str, letta_stack: LocalStack) -> None:
    prompt = "[think] hello from a script"
    result = await run_script("--backend", backend, "--base-url", letta_stack.letta_url, "--agent-id", agent_id, prompt)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert result.stdout.decode().strip() == expected_answer(prompt)
    assert "[Thinking...]" in err
    assert REASONING in err
    assert "[done: end_turn]" in err


async def test_unknown_agent_fails_clearly(letta_stack: LocalStack) -> None:
    unknown = "agent-00000000-0000-4000-8000-000000000000"
    result = await run_script("--backend", "trio", "--base-url", letta_stack.letta_url, "--agent-id", unknown, "hi")
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "answered 404" in err
    assert "Traceback" not in err
