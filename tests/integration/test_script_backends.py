"""``python -m pipeline`` reuses the stages from a plain script, under asyncio and under trio, on real Letta."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devstack.stack import LocalStack
from tests.scripted_llm import REASONING, expected_answer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
async def test_terminal_chat_streams_the_reply(backend: str, agent_id: str, letta_stack: LocalStack) -> None:
    prompt = "[think] hello from a script"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--backend",
            backend,
            "--base-url",
            letta_stack.letta_url,
            "--agent-id",
            agent_id,
            prompt,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected_answer(prompt)
    assert "[Thinking...]" in result.stderr
    assert REASONING in result.stderr
    assert "[done: end_turn]" in result.stderr


async def test_unknown_agent_fails_clearly(letta_stack: LocalStack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--backend",
            "trio",
            "--base-url",
            letta_stack.letta_url,
            "--agent-id",
            "agent-00000000-0000-4000-8000-000000000000",
            "hi",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert result.returncode == 2
    assert "answered 404" in result.stderr
    assert "Traceback" not in result.stderr
