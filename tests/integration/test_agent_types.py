"""Agents of each type in agents.toml, created through the service on the real Letta 0.16.8: their persona,
human and extra blocks, and their tools, as Letta has them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from letta_client import AsyncLetta

from app.agent_types import load_agent_types
from app.settings import DEFAULT_AGENTS_FILE, Settings
from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack
from tests.conftest import SERVICE_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def blocks_of(agent: Any) -> dict[str, Any]:
    return {block.label: block for block in agent.memory.blocks}


async def test_agents_of_both_shipped_types_have_their_blocks_and_tools(
    http: httpx.AsyncClient, letta_client: AsyncLetta
) -> None:
    types = load_agent_types(DEFAULT_AGENTS_FILE, model="m", embedding="e")
    listed = (await http.get("/agent-types")).json()["agent_types"]
    assert [(t["id"], t["name"]) for t in listed] == [("tutor", "Letta Tutor"), ("study-coach", "Study Coach")]
    student = f"typed-{uuid.uuid4().hex[:8]}"  # Letta's data may outlive a test run
    made: dict[str, Any] = {}
    for type_id in ("tutor", "study-coach"):
        body = {"user_id": student, "agent_type": type_id, "user_name": "Grace"}
        response = await http.post("/agents", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["agent_type"] == type_id
        made[type_id] = await letta_client.agents.retrieve(
            response.json()["agent_id"], include=["agent.blocks", "agent.tools", "agent.tags"]
        )
    tutor, coach = made["tutor"], made["study-coach"]
    assert tutor.id != coach.id
    for type_id, agent in made.items():
        blocks = blocks_of(agent)
        assert blocks["persona"].value == types[type_id].persona
        assert blocks["human"].value == types[type_id].human_block("Grace")
        assert f"agent_type:{type_id}" in agent.tags
    assert set(blocks_of(tutor)) == {"persona", "human"}
    plan = blocks_of(coach)["study_plan"]
    assert (plan.value, plan.limit) == (types["study-coach"].block[0].value, 4000)
    assert plan.description == types["study-coach"].block[0].description
    tutor_tools = {tool.name for tool in tutor.tools}
    coach_tools = {tool.name for tool in coach.tools}
    assert "conversation_search" in tutor_tools & coach_tools  # Letta's base tools stay
    assert {"archival_memory_insert", "archival_memory_search"} <= coach_tools
    assert not {"archival_memory_insert", "archival_memory_search"} & tutor_tools
    again = await http.post("/agents", json={"user_id": student, "agent_type": "study-coach"})
    assert (again.status_code, again.json()["agent_id"]) == (200, coach.id)


async def test_a_type_naming_a_tool_letta_lacks_fails_clearly(letta_stack: LocalStack, tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(
        '[[agent_type]]\nid = "gadget"\nname = "Gadget"\npersona = "I use gadgets."\nhuman = "{name}"\n'
        'tools = ["conversation_search", "no_such_tool"]\n'
    )
    settings = Settings(
        letta_base_url=letta_stack.letta_url,
        model=letta_stack.model_handle,
        embedding=letta_stack.embedding_handle,
        service_token=SERVICE_TOKEN,
        agents_file=str(path),
    )
    with ServiceThread(settings) as service:
        headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=60) as client:
            response = await client.post(
                "/agents", json={"user_id": f"gadget-{uuid.uuid4().hex[:8]}", "agent_type": "gadget"}
            )
    assert response.status_code == 500
    body = response.json()
    assert (body["error"], body["field"]) == ("agent_type_misconfigured", "agent_type")
    assert f"agent type 'gadget' ({path}) names tools Letta does not have" in body["message"]
    assert "no_such_tool" in body["message"]
    assert "conversation_search" not in body["message"]  # Letta names only the missing one
