"""``GET /agent-types``, ``POST /agents``, ``GET /agents?user_id=``, ``GET /agents/<id>``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from ..bodies import MAX_ID_CHARS, CreateAgent, to_json
from ..errors import InvalidRequest, NotFound
from ..services import json_body, services
from ..upstream import letta_errors

blueprint = Blueprint("agents", __name__)


@blueprint.get("/agent-types")
async def list_agent_types() -> dict[str, Any]:
    """``{"agent_types": [{id, name, description}]}``: the types a student can pick, in the file's order."""
    return {"agent_types": services().registry.types.listing()}


@blueprint.post("/agents")
async def create_agent() -> tuple[dict[str, Any], int]:
    """The student's agent: 201 when created now, 200 when it already existed."""
    body = await json_body(CreateAgent)
    async with letta_errors():
        info, created = await services().registry.get_or_create(body.user_id, body.agent_type, body.user_name)
    return {**to_json(info), "created": created}, 201 if created else 200


@blueprint.get("/agents")
async def list_agents() -> dict[str, Any]:
    """``{"agents": [...]}`` for ``?user_id=``."""
    user_id = request.args.get("user_id", "").strip()
    if not user_id or len(user_id) > MAX_ID_CHARS:
        raise InvalidRequest("the query parameter user_id is required", field="user_id")
    async with letta_errors():
        agents = await services().registry.list_for_user(user_id)
    return {"agents": to_json(agents)}


@blueprint.get("/agents/<agent_id>")
async def get_agent(agent_id: str) -> dict[str, Any]:
    """One agent's info, or 404 (also when ``?user_id=`` is given and is not its owner)."""
    async with letta_errors():
        info = await services().registry.get(agent_id)
    owner = request.args.get("user_id")
    if info is None or (owner is not None and info.user_id != owner):
        raise NotFound("agent not found")
    result: dict[str, Any] = to_json(info)
    return result
