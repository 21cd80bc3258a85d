"""Endpoint tests: Quart's test client (asyncio only) and an in-memory Letta."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart

from app.factory import create_app
from app.settings import Settings

from .fake_letta import make_fake


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def letta() -> Any:
    return make_fake()


@pytest.fixture
async def app(letta: Any) -> AsyncIterator[Quart]:
    quart = create_app(Settings(max_message_chars=1000, max_body_bytes=10_000), client=letta)
    async with quart.test_app():
        yield quart
