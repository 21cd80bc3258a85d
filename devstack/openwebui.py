"""OpenWebUI 0.12.4 for end-to-end tests: its own venv, a headless browser, a server, API helpers.

Everything here runs offline (see ``/work/shared/facts/openwebui.md``):

* :func:`ensure_openwebui_env` builds OpenWebUI's *own* venv under ``<root>/.stack/openwebui-venv``
  (never the project venv), with the CPU torch wheel from ``PIP_FIND_LINKS`` installed first.
* :func:`ensure_browser` installs Debian ``chromium`` and the ``e2e/`` npm package (``playwright-core``).
* :class:`OpenWebUI` starts ``open-webui serve`` on a free loopback port and stops it by PID.
* :func:`signup_admin`, :func:`add_user`, :func:`install_function`, :func:`set_valves`,
  :func:`grant_model`, :func:`list_models` and :func:`chat_completion_stream` talk to its HTTP API.
* :func:`run_chat` drives one chat turn in the browser through ``e2e/chat.mjs`` and returns its observations.

Every failure raises :class:`OpenWebUIError` with the relevant log or output tail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

OPENWEBUI_VERSION = "0.12.4"
TORCH_VERSION = "2.13.0+cpu"  # the local CPU wheel; PyPI has only the ~3 GB CUDA build
HTTPX_SSE_VERSION = "0.4.3"
CHROMIUM = Path("/usr/bin/chromium")
#: Where the machines keep the CPU torch wheel (also named by ``PIP_FIND_LINKS`` there).
LOCAL_WHEELS = Path("/opt/wheels")

#: Environment that keeps OpenWebUI off the network (model downloads, update checks, telemetry).
OFFLINE_ENV: dict[str, str] = {
    "OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ENABLE_OLLAMA_API": "false",
    "ENABLE_OPENAI_API": "false",
    "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
    "RAG_RERANKING_MODEL_AUTO_UPDATE": "false",
    "WHISPER_MODEL_AUTO_UPDATE": "false",
    "ENABLE_VERSION_UPDATE_CHECK": "false",
    "ANONYMIZED_TELEMETRY": "false",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
}


class OpenWebUIError(RuntimeError):
    """OpenWebUI, its install, the browser or a browser run failed; the message carries the log tail."""


def repo_root() -> Path:
    """The project checkout (the parent of ``devstack/``)."""
    return Path(__file__).resolve().parent.parent


def _uv_command() -> list[str]:
    """How to call uv: ``$UV``, then ``uv`` on PATH, then ``python -m uv``."""
    env_uv = os.environ.get("UV")
    if env_uv:
        return [env_uv]
    found = shutil.which("uv")
    if found:
        return [found]
    return [sys.executable, "-m", "uv"]


def _run(cmd: Sequence[str], *, cwd: Path | None = None, log: Path | None = None) -> None:
    """Run ``cmd``; on failure raise with the tail of its output."""
    proc = subprocess.run(list(cmd), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n")
    if proc.returncode != 0:
        raise OpenWebUIError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{_tail(proc.stdout)}")


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def openwebui_venv(root: Path) -> Path:
    """Where OpenWebUI's own venv lives for the checkout ``root``."""
    return Path(root).resolve() / ".stack" / "openwebui-venv"


def ensure_openwebui_env(root: Path) -> Path:
    """Create OpenWebUI's own venv under ``<root>/.stack/openwebui-venv`` once; return the venv path.

    Order matters: the CPU torch wheel (found by pip through ``PIP_FIND_LINKS``) goes in before
    open-webui, otherwise uv resolves a ~3 GB CUDA torch. ``httpx-sse`` is what a pipe's
    ``requirements:`` front matter would install online; ``OFFLINE_MODE`` skips that, so it is
    installed here. A marker file makes a second call a no-op.
    """
    venv = openwebui_venv(root)
    marker = venv / ".letta-stream-ready"
    wanted = f"open-webui=={OPENWEBUI_VERSION} torch=={TORCH_VERSION} httpx-sse=={HTTPX_SSE_VERSION}\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "openwebui-install.log"
    uv = _uv_command()
    python = venv / "bin" / "python"
    if not python.exists():
        _run([*uv, "venv", "-p", "python3.11", str(venv)], log=log)
    _run([str(python), "-m", "ensurepip"], log=log)
    find_links = (
        [] if os.environ.get("PIP_FIND_LINKS") or not LOCAL_WHEELS.is_dir() else ["--find-links", str(LOCAL_WHEELS)]
    )
    _run([str(python), "-m", "pip", "install", "--quiet", *find_links, f"torch=={TORCH_VERSION}"], log=log)
    _run([*uv, "pip", "install", "--python", str(python), f"open-webui=={OPENWEBUI_VERSION}"], log=log)
    _run([*uv, "pip", "install", "--python", str(python), f"httpx-sse=={HTTPX_SSE_VERSION}"], log=log)
    marker.write_text(wanted)
    return venv


def ensure_browser(root: Path | None = None) -> None:
    """Install Debian ``chromium`` (if missing) and the ``e2e/`` npm package (if not installed)."""
    root = repo_root() if root is None else Path(root)
    if not CHROMIUM.exists():
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
        ):
            proc = subprocess.run(
                cmd, env=apt_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
            )
            if proc.returncode != 0:
                raise OpenWebUIError(f"{' '.join(cmd)} failed:\n{_tail(proc.stdout)}")
    e2e = root / "e2e"
    if not (e2e / "node_modules" / "playwright-core").exists():
        _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=e2e)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (racy, but fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OpenWebUI:
    """``open-webui serve`` on 127.0.0.1 as a context manager; stopped by PID on exit.

    ``data_dir`` holds OpenWebUI's database and uploads; the server log goes to
    ``<data_dir>/../openwebui.log`` unless ``log_path`` is given.
    """

    def __init__(
        self,
        venv: Path,
        data_dir: Path,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 180.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.venv = Path(venv).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.port = port if port is not None else free_port()
        self.log_path = Path(log_path).resolve() if log_path is not None else self.data_dir.parent / "openwebui.log"
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8123``."""
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server log."""
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return "(no log)"

    def start(self) -> None:
        """Start the server and wait for ``/health``; raise with the log tail on failure."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **OFFLINE_ENV,
            "DATA_DIR": str(self.data_dir),
            "WEBUI_SECRET_KEY": "letta-stream-e2e-secret",
            **self.extra_env,
        }
        # Never leak the project venv into OpenWebUI's interpreter.
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        exe = self.venv / "bin" / "open-webui"
        cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = started + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise OpenWebUIError(
                    f"open-webui exited with {self.proc.returncode} during startup; log tail:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise OpenWebUIError(
                    f"open-webui /health not ready after {self.startup_timeout:.0f}s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.5)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Terminate the server process (then kill after 15 s)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> OpenWebUI:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --- API helpers -------------------------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise OpenWebUIError(f"{resp.request.method} {resp.request.url} -> {resp.status_code}: {resp.text[:2000]}")
    return resp.json()


def signup_admin(base_url: str, name: str, email: str, password: str) -> str:
    """Sign up the first user (who becomes admin) and return its bearer token.

    If the user already exists, sign in instead.
    """
    payload = {"name": name, "email": email, "password": password}
    resp = httpx.post(f"{base_url}/api/v1/auths/signup", json=payload, timeout=30)
    if resp.status_code >= 400:
        resp = httpx.post(f"{base_url}/api/v1/auths/signin", json={"email": email, "password": password}, timeout=30)
    token: str = _check(resp)["token"]
    return token


def add_user(base_url: str, admin_token: str, name: str, email: str, password: str, role: str = "user") -> str:
    """As admin, create an active (non-pending) user; return the new user's bearer token."""
    payload = {"name": name, "email": email, "password": password, "role": role}
    resp = httpx.post(f"{base_url}/api/v1/auths/add", json=payload, headers=_auth(admin_token), timeout=30)
    if resp.status_code >= 400:  # already there: sign in
        resp = httpx.post(f"{base_url}/api/v1/auths/signin", json={"email": email, "password": password}, timeout=30)
    token: str = _check(resp)["token"]
    return token


def install_function(
    base_url: str, token: str, function_id: str, name: str, source_code: str, description: str = ""
) -> None:
    """Create (or update) the Function ``function_id`` from ``source_code`` and make sure it is active."""
    payload = {"id": function_id, "name": name, "content": source_code, "meta": {"description": description}}
    with httpx.Client(base_url=base_url, headers=_auth(token), timeout=60) as client:
        existing = client.get(f"/api/v1/functions/id/{function_id}")
        if existing.status_code == 200:
            _check(client.post(f"/api/v1/functions/id/{function_id}/update", json=payload))
            active = bool(existing.json().get("is_active"))
        else:
            _check(client.post("/api/v1/functions/create", json=payload))
            active = False
        if not active:
            toggled = _check(client.post(f"/api/v1/functions/id/{function_id}/toggle"))
            if not toggled.get("is_active"):
                raise OpenWebUIError(f"function {function_id} is still inactive after toggle: {toggled}")
        # OpenWebUI answers chat completions from its cached model list, rebuilt when models are listed:
        # a function installed after the list was built is "Model not found" until then
        _check(client.get("/api/models"))


def set_valves(base_url: str, token: str, function_id: str, valves: Mapping[str, Any]) -> dict[str, Any]:
    """Replace the Function's valves; return what OpenWebUI stored."""
    resp = httpx.post(
        f"{base_url}/api/v1/functions/id/{function_id}/valves/update",
        json=dict(valves),
        headers=_auth(token),
        timeout=30,
    )
    stored: dict[str, Any] = _check(resp)
    return stored


def grant_model(base_url: str, token: str, function_id: str, name: str | None = None) -> None:
    """Create a workspace model over the pipe ``function_id`` readable by every user (non-admins need it)."""
    payload: dict[str, Any] = {
        "id": function_id,
        "base_model_id": None,
        "name": name or function_id,
        "meta": {},
        "params": {},
        "access_grants": [{"principal_type": "user", "principal_id": "*", "permission": "read"}],
    }
    _check(httpx.post(f"{base_url}/api/v1/models/create", json=payload, headers=_auth(token), timeout=30))


def list_models(base_url: str, token: str) -> list[str]:
    """Model ids the user can see (pipes show up as ``<function id>``)."""
    data = _check(httpx.get(f"{base_url}/api/models", headers=_auth(token), timeout=60))
    return [str(m["id"]) for m in data.get("data", [])]


def chat_completion_stream(
    base_url: str, token: str, model: str, messages: Sequence[Mapping[str, Any]], timeout: float = 120.0
) -> Iterator[dict[str, Any]]:
    """Stream ``POST /api/chat/completions`` and yield each decoded SSE ``data:`` JSON object.

    Stops at ``[DONE]``. Status events are not part of this stream (they go over socket.io).
    """
    payload = {"model": model, "stream": True, "messages": [dict(m) for m in messages]}
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("POST", f"{base_url}/api/chat/completions", json=payload, headers=_auth(token)) as resp,
    ):
        if resp.status_code >= 400:
            resp.read()
            raise OpenWebUIError(f"chat/completions -> {resp.status_code}: {resp.text[:2000]}")
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            if data:
                yield json.loads(data)


def run_chat(
    url: str,
    email: str,
    password: str,
    model: str,
    prompt: str,
    *,
    screenshot_dir: Path | None = None,
    stop_after_ms: int | None = None,
    timeout_ms: int = 120_000,
    extra: Mapping[str, Any] | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Run ``node e2e/chat.mjs`` for one chat turn in a fresh headless Chromium; return its JSON report.

    Raises :class:`OpenWebUIError` (with stderr and the report's ``error``) if the run did not complete.
    """
    root = repo_root() if root is None else Path(root)
    args: dict[str, Any] = {
        "url": url,
        "email": email,
        "password": password,
        "model": model,
        "prompt": prompt,
        "timeoutMs": timeout_ms,
        **(extra or {}),
    }
    if screenshot_dir is not None:
        args["screenshotDir"] = str(screenshot_dir)
    if stop_after_ms is not None:
        args["stopAfterMs"] = stop_after_ms
    try:
        proc = subprocess.run(
            ["node", str(root / "e2e" / "chat.mjs"), json.dumps(args)],
            cwd=root / "e2e",
            capture_output=True,
            text=True,
            timeout=timeout_ms / 1000 + 90,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OpenWebUIError(f"chat.mjs timed out; stderr tail:\n{_tail(str(exc.stderr or ''))}") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    if proc.returncode != 0 or not report.get("ok"):
        raise OpenWebUIError(
            f"chat.mjs failed (exit {proc.returncode}): {report.get('error', '(no report)')}\n"
            f"stdout tail:\n{_tail(proc.stdout, 20)}\nstderr tail:\n{_tail(proc.stderr)}"
        )
    return report
