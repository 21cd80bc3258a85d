"""The manifold pipe in a real OpenWebUI 0.12.4 and Chromium: the model menu lists every agent type the service
defines (agents.toml: the tutor and the study coach), by name, and picking one talks to that type's agent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from devstack import openwebui as owui
from devstack.service_thread import ServiceThread
from tests.conftest import SERVICE_TOKEN
from tests.scripted_llm import expected_answer

from .conftest import LETTA_PIPE_ID, Admin, RunChat

pytestmark = pytest.mark.e2e


def test_the_model_menu_lists_both_agent_types_and_the_pick_reaches_its_agent(
    admin: Admin, letta_pipe: str, service: ServiceThread, run_chat: RunChat, artifacts_dir: Path
) -> None:
    tutor, coach = f"{LETTA_PIPE_ID}.tutor", f"{LETTA_PIPE_ID}.study-coach"
    assert {tutor, coach} <= set(owui.list_models(admin.url, admin.token))  # OpenWebUI's own model list

    prompt = "Help me plan my week of revision"
    report = run_chat(coach, prompt)
    (artifacts_dir / "report.json").write_text(json.dumps(report, indent=2))

    options = {o["value"]: o["text"] for o in report["menuOptions"]}
    assert "Letta Tutor" in options.get(tutor, ""), report["menuOptions"]
    assert "Study Coach" in options.get(coach, ""), report["menuOptions"]
    assert "Study Coach" in (report["selectedModel"] or "")
    assert report["final"]["text"] == expected_answer(prompt)

    me = httpx.get(f"{admin.url}/api/v1/auths/", headers={"Authorization": f"Bearer {admin.token}"}, timeout=30)
    me.raise_for_status()
    agents = httpx.get(
        f"{service.url}/agents",
        params={"user_id": me.json()["id"]},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        timeout=30,
    ).json()["agents"]
    assert "study-coach" in {a["agent_type"] for a in agents}, agents  # the pipe created the coach
