"""Fixtures for tests against the real local stack (Postgres, scripted LLM, Letta).

The stack is started once per session; a start failure FAILS the tests with
the component's log tail (a silently skipped integration suite hides breakage).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `devstack` and `tests.scripted_llm` live at the repo root
    sys.path.insert(0, str(REPO_ROOT))

from letta_client import AsyncLetta  # noqa: E402

from devstack.stack import LocalStack  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def letta_client(letta_stack: LocalStack) -> AsyncIterator[AsyncLetta]:
    client = AsyncLetta(base_url=letta_stack.letta_url, timeout=60)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def agent_id(letta_stack: LocalStack, letta_client: AsyncLetta) -> AsyncIterator[str]:
    """A fresh letta_v1_agent on the scripted model, deleted afterwards."""
    agent = await letta_client.agents.create(
        agent_type="letta_v1_agent",
        model=letta_stack.model_handle,
        embedding=letta_stack.embedding_handle,
        tags=["integration-test"],
    )
    try:
        yield agent.id
    finally:
        await letta_client.agents.delete(agent.id)
