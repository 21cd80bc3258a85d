"""The real service (hypercorn, in-process thread) in front of the session's Letta stack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.settings import Settings
from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack


@pytest.fixture(scope="session")
def service(letta_stack: LocalStack) -> Iterator[ServiceThread]:
    settings = Settings(
        letta_base_url=letta_stack.letta_url,
        model=letta_stack.model_handle,
        embedding=letta_stack.embedding_handle,
        keepalive_interval=1.0,
    )
    with ServiceThread(settings) as running:
        yield running


@pytest.fixture
async def http(service: ServiceThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
        yield client
