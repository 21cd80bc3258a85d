"""The pipe runs inside OpenWebUI, on asyncio."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.service_thread import ServiceThread

from .scripted_service import create_app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ServiceThread]:
    with ServiceThread(app=create_app()) as running:
        yield running


@pytest.fixture
def calls(scripted: ServiceThread) -> list[Any]:
    recorded: list[Any] = scripted.app.config["calls"]
    recorded.clear()
    return recorded
