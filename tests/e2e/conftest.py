"""Fixtures for the OpenWebUI + real-browser end-to-end tests.

One OpenWebUI server per session (its own venv under ``.stack/openwebui-venv``, data in a tmp dir), one
admin account signed up through the API. Anything that cannot be installed or started FAILS the tests
with its log tail: a silently skipped e2e suite hides breakage.

Screenshots of each browser run go to ``.stack/e2e-artifacts/<test name>/``.

The real chain (``test_letta_pipe.py``) also needs the local Letta stack and our service: their
session fixtures live in ``tests/conftest.py``, shared with the integration suite (one stack per run).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `devstack` lives at the repo root
    sys.path.insert(0, str(REPO_ROOT))

from devstack import openwebui as owui  # noqa: E402
from devstack.service_thread import ServiceThread  # noqa: E402
from tests.conftest import SERVICE_TOKEN  # noqa: E402  (letta_stack and service come from tests/conftest.py)

FAKE_PIPE_PATH = Path(__file__).with_name("fake_pipe.py")
FAKE_PIPE_ID = "fake_pipe"
LETTA_PIPE_PATH = REPO_ROOT / "pipe" / "letta_pipe.py"
LETTA_PIPE_ID = "letta_tutor"


@dataclass(frozen=True)
class Admin:
    """The signed-up admin of the session's OpenWebUI."""

    url: str
    email: str
    password: str
    token: str


def load_fake_pipe() -> ModuleType:
    """Import ``fake_pipe.py`` by path (for its expected texts)."""
    spec = importlib.util.spec_from_file_location("letta_stream_e2e_fake_pipe", FAKE_PIPE_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def openwebui_venv() -> Path:
    """OpenWebUI's own venv and the browser, installed once (idempotent)."""
    try:
        venv = owui.ensure_openwebui_env(REPO_ROOT)
        owui.ensure_browser(REPO_ROOT)
    except Exception as exc:
        pytest.fail(f"cannot install OpenWebUI or the browser: {exc}", pytrace=False)
    return venv


@pytest.fixture(scope="session")
def openwebui(openwebui_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[owui.OpenWebUI]:
    """A running OpenWebUI on a free loopback port, stopped by PID at the end of the session."""
    base = tmp_path_factory.mktemp("openwebui")
    server = owui.OpenWebUI(openwebui_venv, base / "data", log_path=base / "openwebui.log")
    try:
        server.start()
    except Exception as exc:
        pytest.fail(f"cannot start OpenWebUI: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def admin(openwebui: owui.OpenWebUI) -> Admin:
    """The first user, signed up through the API (so it is admin)."""
    email, password = "admin@example.com", "e2e-admin-password"
    try:
        token = owui.signup_admin(openwebui.url, "E2E Admin", email, password)
    except Exception as exc:
        pytest.fail(f"cannot sign up the admin: {exc}\nOpenWebUI log tail:\n{openwebui.log_tail()}", pytrace=False)
    return Admin(openwebui.url, email, password, token)


@pytest.fixture(scope="session")
def fake_pipe(admin: Admin, openwebui: owui.OpenWebUI) -> ModuleType:
    """The throwaway pipe, installed and active as model ``fake_pipe``; returns its module."""
    try:
        owui.install_function(
            admin.url,
            admin.token,
            FAKE_PIPE_ID,
            "Fake Pipe",
            FAKE_PIPE_PATH.read_text(),
            "Harness-only pipe: status, reasoning, chunked answer",
        )
    except Exception as exc:
        pytest.fail(f"cannot install the fake pipe: {exc}\nOpenWebUI log tail:\n{openwebui.log_tail()}", pytrace=False)
    return load_fake_pipe()


@pytest.fixture(scope="session")
def letta_pipe(admin: Admin, openwebui: owui.OpenWebUI, service: ServiceThread) -> str:
    """``pipe/letta_pipe.py``, uploaded unchanged, active, valves pointing at the service; the model id of its
    ``tutor`` (a manifold: one model ``<function id>.<type id>`` per agent type the service lists)."""
    try:
        owui.install_function(
            admin.url,
            admin.token,
            LETTA_PIPE_ID,
            "Letta Tutor",
            LETTA_PIPE_PATH.read_text(),
            "The real pipe: OpenWebUI -> letta-stream service -> Letta",
        )
        stored = owui.set_valves(
            admin.url, admin.token, LETTA_PIPE_ID, {"SERVICE_URL": service.url, "SERVICE_TOKEN": SERVICE_TOKEN}
        )
    except Exception as exc:
        pytest.fail(f"cannot install the Letta pipe: {exc}\nOpenWebUI log tail:\n{openwebui.log_tail()}", pytrace=False)
    assert stored.get("SERVICE_URL") == service.url, stored
    return f"{LETTA_PIPE_ID}.tutor"


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    """A fresh ``.stack/e2e-artifacts/<test name>/`` for screenshots."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = REPO_ROOT / ".stack" / "e2e-artifacts" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


RunChat = Callable[..., dict[str, Any]]


@pytest.fixture
def run_chat(admin: Admin, openwebui: owui.OpenWebUI, artifacts_dir: Path) -> RunChat:
    """``run_chat(model, prompt, **kwargs)``: one browser chat turn as the admin; fails with log tails."""

    def run(model: str, prompt: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return owui.run_chat(
                admin.url, admin.email, admin.password, model, prompt, screenshot_dir=artifacts_dir, **kwargs
            )
        except owui.OpenWebUIError as exc:
            pytest.fail(f"{exc}\nOpenWebUI log tail:\n{openwebui.log_tail(30)}", pytrace=False)

    return run
