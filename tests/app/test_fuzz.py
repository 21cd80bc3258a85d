"""Fuzzing every endpoint with arbitrary JSON and arbitrary bytes: never a 500, always a JSON answer."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.factory import create_app
from app.settings import Settings

from .fake_letta import make_fake

pytestmark = pytest.mark.anyio

ENDPOINTS = [("POST", "/agents"), ("POST", "/chat"), ("POST", "/chat/stream"), ("POST", "/chat/cancel")]
FIELDS = [
    "user_id",
    "agent_type",
    "user_name",
    "agent_id",
    "message",
    "chat_id",
    "chat_title",
    "enable_thinking",
    "stream_tokens",
    "run_id",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
bodies = json_values | st.dictionaries(
    st.sampled_from(FIELDS), json_values | st.sampled_from(["agent-1", "tutor", ""]), max_size=6
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    app = create_app(Settings(max_body_bytes=4096), client=make_fake())
    async with app.test_app():
        response = await app.test_client().open(path, method=method, **kwargs)
        data = await response.get_data()
    return response.status_code, data


def assert_clean(status: int, data: bytes, content_type_json: bool = True) -> None:
    assert status < 500, data
    if status >= 400:
        import json

        assert "error" in json.loads(data)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@FUZZ
@given(body=bodies)
async def test_any_json_body(method: str, path: str, body: Any) -> None:
    status, data = await call(method, path, json=body)
    assert_clean(status, data)


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@FUZZ
@given(raw=st.binary(max_size=6000))
async def test_any_bytes(method: str, path: str, raw: bytes) -> None:
    status, data = await call(method, path, data=raw, headers={"Content-Type": "application/json"})
    assert status in (400, 413)
    assert_clean(status, data)


@FUZZ
@given(user_id=st.text(max_size=300), agent_id=st.text(max_size=300))
async def test_any_query_and_path(user_id: str, agent_id: str) -> None:
    status, data = await call("GET", "/agents", query_string={"user_id": user_id})
    assert_clean(status, data)
    safe = "".join(c for c in agent_id if c.isalnum() or c in "-_") or "x"
    status, data = await call("GET", f"/agents/{safe}")
    assert_clean(status, data)


@FUZZ
@given(last_id=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300))
async def test_any_last_event_id(last_id: str) -> None:
    """A reconnecting client's ``Last-Event-ID`` is untrusted input too."""
    app = create_app(Settings(max_body_bytes=4096), client=make_fake())
    async with app.test_app():
        client = app.test_client()
        agent_id = (await (await client.post("/agents", json={"user_id": "u"})).get_json())["agent_id"]
        response = await client.post(
            "/chat/stream", json={"agent_id": agent_id, "message": "hi"}, headers={"Last-Event-ID": last_id}
        )
        data = await response.get_data()
    assert_clean(response.status_code, data)
    if last_id.strip():
        assert response.status_code in (400, 410), data  # not a position, or no such turn (any more)
