"""The second way in, end to end: OpenWebUI 0.12.4 with this service as an OpenAI connection, no pipe.

Chromium → OpenWebUI (its own instance, configured only by environment as an admin would:
``OPENAI_API_BASE_URLS`` = the service's ``/v1``, ``OPENAI_API_KEYS`` = its token,
``ENABLE_FORWARD_USER_INFO_HEADERS=true`` and ``FORWARD_USER_INFO_HEADER_JWT_SECRET``) →
``/v1/chat/completions`` of a service that knows students only from that signed header →
the real Letta server (scripted model behind it).  No Function is installed.

Screenshots and each ``chat.mjs`` report go to ``.stack/e2e-artifacts/<test name>/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.settings import Settings
from devstack import openwebui as owui
from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack
from tests.conftest import RESUME_GRACE, SERVICE_TOKEN
from tests.scripted_llm import TOOL_NAME, expected_answer

from .conftest import Admin
from .test_letta_pipe import (
    _user_id,
    letta_runs,
    save_report,
    streaming_lengths,
    wait_for_run_status,
    wait_for_settled_runs,
)

pytestmark = pytest.mark.e2e

JWT_SECRET = "e2e-openwebui-forward-user-jwt-secret-0123456789"
MODEL = "tutor"


@pytest.fixture(scope="module")
def connection_service(letta_stack: LocalStack) -> Iterator[ServiceThread]:
    """The service, requiring OpenWebUI's signed user header on ``/v1``."""
    settings = Settings(
        letta_base_url=letta_stack.letta_url,
        model=letta_stack.model_handle,
        embedding=letta_stack.embedding_handle,
        service_token=SERVICE_TOKEN,
        redis_url=letta_stack.redis_url,
        openwebui_jwt_secret=JWT_SECRET,
    )
    with ServiceThread(settings) as running:
        yield running


@pytest.fixture(scope="module")
def connected_openwebui(
    openwebui_venv: Path, connection_service: ServiceThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[owui.OpenWebUI]:
    """A second OpenWebUI (its own data dir and port) whose only model provider is the service."""
    base = tmp_path_factory.mktemp("openwebui-connection")
    env = {
        "ENABLE_OPENAI_API": "true",
        "OPENAI_API_BASE_URLS": f"{connection_service.url}/v1",
        "OPENAI_API_KEYS": SERVICE_TOKEN,
        "ENABLE_FORWARD_USER_INFO_HEADERS": "true",
        "FORWARD_USER_INFO_HEADER_JWT_SECRET": JWT_SECRET,
    }
    server = owui.OpenWebUI(openwebui_venv, base / "data", log_path=base / "openwebui.log", extra_env=env)
    try:
        server.start()
    except Exception as exc:
        pytest.fail(f"cannot start the connected OpenWebUI: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def conn_admin(connected_openwebui: owui.OpenWebUI) -> Admin:
    email, password = "teacher@example.com", "e2e-connection-password"
    token = owui.signup_admin(connected_openwebui.url, "Connection Admin", email, password)
    return Admin(connected_openwebui.url, email, password, token)


def chat_in_browser(
    admin: Admin, server: owui.OpenWebUI, prompt: str, artifacts: Path, **kwargs: Any
) -> dict[str, Any]:
    try:
        report = owui.run_chat(
            admin.url, admin.email, admin.password, MODEL, prompt, screenshot_dir=artifacts, **kwargs
        )
    except owui.OpenWebUIError as exc:
        pytest.fail(f"{exc}\nOpenWebUI log tail:\n{server.log_tail(30)}", pytrace=False)
    save_report(report, artifacts)
    return report


def stored_chat(admin: Admin, chat_url: str) -> dict[str, Any]:
    chat_id = chat_url.rstrip("/").rsplit("/", 1)[-1]
    resp = httpx.get(f"{admin.url}/api/v1/chats/{chat_id}", headers={"Authorization": f"Bearer {admin.token}"})
    resp.raise_for_status()
    found: dict[str, Any] = resp.json()
    return found


def wait_for_title(admin: Admin, chat_url: str, timeout: float = 15.0) -> str:
    """The chat's title once OpenWebUI's background title generation replaced "New Chat"."""
    deadline = time.monotonic() + timeout
    title = str(stored_chat(admin, chat_url).get("title"))
    while title == "New Chat" and time.monotonic() < deadline:
        time.sleep(0.3)
        title = str(stored_chat(admin, chat_url).get("title"))
    return title


# --- tests ---------------------------------------------------------------------------------------------


def test_the_service_is_a_connection_and_no_pipe_is_installed(conn_admin: Admin) -> None:
    assert MODEL in owui.list_models(conn_admin.url, conn_admin.token)
    functions = httpx.get(
        f"{conn_admin.url}/api/v1/functions/", headers={"Authorization": f"Bearer {conn_admin.token}"}, timeout=30
    )
    functions.raise_for_status()
    assert functions.json() == []


def test_browser_streams_reasoning_and_answer_and_a_titled_chat_costs_one_run(
    conn_admin: Admin,
    connected_openwebui: owui.OpenWebUI,
    letta_stack: LocalStack,
    artifacts_dir: Path,
) -> None:
    prompt = "[think] [tool] [slow 60] [long 40] Help me start my essay"
    expected = expected_answer(prompt)
    user_id = _user_id(conn_admin)
    runs_before = letta_runs(letta_stack, user_id)

    report = chat_in_browser(conn_admin, connected_openwebui, prompt, artifacts_dir)
    print(f"\nbrowser timings (ms since send / since start): {report['timings']}")

    assert "Letta Tutor" in (report["selectedModel"] or "")
    # OpenWebUI's native reasoning block: "Thinking…" while streaming, "Thought for …" at the end.
    assert any(r.startswith("Thought for") for r in report["reasoningTexts"]), report["reasoningTexts"]
    assert (report["final"]["reasoning"] or "").startswith("Thought for"), report["final"]
    # The answer grew in front of the student, and is exactly the scripted one.
    lengths = streaming_lengths(report)
    assert len(set(lengths)) >= 2, report["samples"]
    assert lengths == sorted(lengths), report["samples"]
    assert report["final"]["text"] == expected
    assert report["final"]["done"]
    # Persisted: the same after a reload.
    assert report["reload"]["text"] == expected
    assert (report["reload"]["reasoning"] or "").startswith("Thought for"), report["reload"]
    # The tool use is inside the stored reasoning, and no tool call was handed to OpenWebUI.
    stored = json.dumps(stored_chat(conn_admin, report["chatUrl"]))
    assert f"Using {TOOL_NAME}..." in stored
    # OpenWebUI generated a title (and tags, follow-ups) through the same model: answered by the service...
    title = wait_for_title(conn_admin, report["chatUrl"])
    assert title.startswith("[think] [tool] [slow 60] [long 40] Help me start"), title
    # ...so the whole chat cost exactly one agent run.
    runs_after = wait_for_settled_runs(letta_stack, user_id)
    new_runs = {k: v for k, v in runs_after.items() if k not in runs_before}
    assert list(new_runs.values()) == ["completed"], new_runs


def test_browser_stop_keeps_the_partial_answer_and_cancels_the_letta_run(
    conn_admin: Admin,
    connected_openwebui: owui.OpenWebUI,
    letta_stack: LocalStack,
    artifacts_dir: Path,
) -> None:
    prompt = "[long 400] [slow 40] Tell me everything about essay structure"
    full = expected_answer(prompt)
    user_id = _user_id(conn_admin)
    runs_before = wait_for_settled_runs(letta_stack, user_id)

    report = chat_in_browser(conn_admin, connected_openwebui, prompt, artifacts_dir, stop_after_ms=3000)
    print(f"\nbrowser timings (ms): {report['timings']}; stop pressed at {report['stopPressedAtMs']} ms")

    assert report["stopped"], report["samples"]
    partial = report["final"]["text"]
    assert 0 < len(partial) < len(full), report["final"]
    assert full.startswith(partial), (partial[-80:], report["final"])
    assert report["reload"]["text"] == partial
    # The stop closed OpenWebUI's connection to the service, which cancelled the run in Letta at once
    # (this protocol has no resume, so there is no grace period to wait out).
    runs_after = letta_runs(letta_stack, user_id)
    new_runs = [k for k in runs_after if k not in runs_before]
    assert len(new_runs) == 1, (runs_before, runs_after)
    status, waited = wait_for_run_status(letta_stack, new_runs[0], "cancelled", timeout=RESUME_GRACE / 2)
    print(f"Letta run {new_runs[0]}: {status} (waited {waited:.1f} s after the browser run ended)")
    assert status == "cancelled"
