"""Calls of the service's HTTP API that several integration tests make the same way."""

from __future__ import annotations

from typing import Any

import httpx


async def new_agent(http: httpx.AsyncClient, user_id: str, *, user_name: str | None = None) -> str:
    """The student's agent (created, or found again): ``POST /agents`` must answer 200 or 201."""
    body: dict[str, Any] = {"user_id": user_id}
    if user_name is not None:
        body["user_name"] = user_name
    response = await http.post("/agents", json=body)
    assert response.status_code in (200, 201), response.text
    agent_id: str = response.json()["agent_id"]
    return agent_id
