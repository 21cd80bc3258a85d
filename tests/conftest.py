"""Session fixtures shared by the integration and end-to-end suites: one real stack per run.

The local stack (embedded Postgres, scripted LLM, Letta server) and our service in front
of it start at most once per pytest session, whichever suite asks first, and only if a
selected test needs them.  A start failure FAILS the tests with the component's log tail.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack, StackError

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE_TOKEN = "integration-service-token"
"""The bearer token the test service requires (the pipe's SERVICE_TOKEN valve)."""
RESUME_GRACE = 6.0
"""Seconds the test service keeps a dropped client's turn running (30 by default)."""


@pytest.fixture(scope="session")
def letta_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(REPO_ROOT, tmp_path_factory.mktemp("letta-stack"))
    began = time.monotonic()
    try:
        stack.start()
    except StackError as exc:
        pytest.fail(f"local Letta stack did not start:\n{exc}", pytrace=False)
    print(f"\nlocal stack up in {time.monotonic() - began:.1f} s: {stack.startup_seconds}")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def service(letta_stack: LocalStack) -> Iterator[ServiceThread]:
    """The service on real hypercorn (in a thread), in front of the session's Letta and Redis, token required."""
    settings = Settings(
        letta_base_url=letta_stack.letta_url,
        model=letta_stack.model_handle,
        embedding=letta_stack.embedding_handle,
        keepalive_interval=1.0,
        service_token=SERVICE_TOKEN,
        resume_grace=RESUME_GRACE,
        redis_url=letta_stack.redis_url,  # turn state in the stack's real Redis, as deployed
    )
    with ServiceThread(settings) as running:
        yield running


@pytest.fixture
async def http(service: ServiceThread) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service that holds the token."""
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    async with httpx.AsyncClient(base_url=service.url, timeout=60, headers=headers) as client:
        yield client
