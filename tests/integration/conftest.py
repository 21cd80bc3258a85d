"""Fixtures for tests against the real local stack (Postgres, scripted LLM, Letta).

The session-scoped ``letta_stack`` lives in ``tests/conftest.py`` (shared with
the e2e suite); a start failure FAILS the tests with the component's log tail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from letta_client import AsyncLetta

from devstack.stack import LocalStack


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


from .emulator import emulator  # noqa: E402, F401  (the bench's Letta-API emulator, for scale and shutdown)
