"""``task up``: the whole local stack in one command.

Redis → embedded Postgres → scripted LLM (or a real provider when ``OPENAI_API_KEY`` is
set) → Letta server → the letta-stream service (``python -m app.launch``: hypercorn.toml's
worker processes), each waited for until healthy.  ``--replicas N`` (``task up --
--replicas 2``) starts N services on their own ports sharing turn state through the
stack's Redis, with HAProxy in front on the same address (:mod:`devstack.replicas`).
Prints the curl lines to try and what another replica would need, then waits; Ctrl-C
(or SIGTERM) stops everything in reverse order, by PID.  The data directory
(``.stack/data``) is kept, so agents survive a restart.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from devstack._proc import StackError, base_env
from devstack.replicas import Replicas, ServiceProcess
from devstack.stack import REPO_ROOT, LocalStack, _raise_keyboard_interrupt

SERVICE_PORT = 8100
SERVICE_URL = f"http://127.0.0.1:{SERVICE_PORT}"


def curl_lines(url: str, token: str | None) -> str:
    auth = f" -H 'Authorization: Bearer {token}'" if token else ""
    env = f"LETTA_STREAM_TOKEN={token} " if token else ""
    return f"""
letta-stream is up at {url}
service token (the pipe's SERVICE_TOKEN valve): {token or "none: SERVICE_AUTH=off"}

  curl -s -X POST {url}/agents{auth} -H 'Content-Type: application/json' \\
       -d '{{"user_id": "student1", "agent_type": "tutor", "user_name": "Ada"}}'
  curl -s{auth} '{url}/agents?user_id=student1'
  curl -s -X POST {url}/chat{auth} -H 'Content-Type: application/json' \\
       -d '{{"agent_id": "<agent_id>", "message": "Help me start my essay"}}'
  curl -N -X POST {url}/chat/stream{auth} -H 'Content-Type: application/json' \\
       -d '{{"agent_id": "<agent_id>", "message": "[think] [tool] Help me start my essay"}}'

  (with the scripted model, [think], [tool], [long N] and [slow MS] in a message choose its behaviour)
  {env}uv run python -m pipe "Help me start my essay"     # what OpenWebUI would receive
Ctrl-C stops everything.
"""


def replica_settings(env: dict[str, str]) -> str:
    """What another replica of the service needs to join these (same Letta, token and Redis)."""
    names = (
        ("LETTA_BASE_URL", "SERVICE_TOKEN", "REDIS_URL")
        if env.get("SERVICE_TOKEN")
        else ("LETTA_BASE_URL", "REDIS_URL")
    )
    settings = " ".join(f"{name}={env[name]}" for name in names)
    auth = "" if env.get("SERVICE_TOKEN") else " SERVICE_AUTH=off"
    return f"""another replica needs the same settings:
  {settings}{auth} uv run python -m app.launch --bind 127.0.0.1:<port>
"""


def service_token() -> str | None:
    """The token to require: ``SERVICE_TOKEN`` if set, none with ``SERVICE_AUTH=off``, else a new one."""
    if os.environ.get("SERVICE_AUTH", "on").strip().lower() == "off":
        return None
    return os.environ.get("SERVICE_TOKEN") or secrets.token_urlsafe(24)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="task up", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".stack" / "data")
    parser.add_argument(
        "--replicas", type=int, default=1, help="services behind HAProxy on :8100 (1: the service on :8100 itself)"
    )
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be 1 or more")
    real = bool(os.environ.get("OPENAI_API_KEY"))
    model = os.environ.get("LETTA_MODEL", "openai/gpt-4o-mini") if real else None
    stack = LocalStack(REPO_ROOT, args.data_dir, use_env_provider=real, model_handle=model)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with stack:
            print(f"Letta {stack.letta_url} (model {stack.model_handle}) up: {stack.startup_seconds}", flush=True)
            token = service_token()
            env = base_env(
                SERVICE_TOKEN=token or "",
                SERVICE_AUTH="on" if token else "off",
                LETTA_BASE_URL=stack.letta_url,
                LETTA_MODEL=stack.model_handle,
                LETTA_EMBEDDING=stack.embedding_handle,
                REDIS_URL=stack.redis_url,  # turn state shared by every worker and replica
            )
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each launcher makes its own
            if args.replicas == 1:
                serve_one(env, stack.logs_dir, token)
            else:
                serve_replicas(args.replicas, env, stack.logs_dir, token)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    except StackError as exc:
        sys.exit(f"the local stack failed to start:\n{exc}")


def serve_one(env: dict[str, str], logs_dir: Path, token: str | None) -> None:
    """The service on :8100 until it exits or we are stopped; it stops first (drained), then the stack."""
    service = ServiceProcess(SERVICE_PORT, env, logs_dir / "service.log")
    try:
        service.start()
        print(curl_lines(SERVICE_URL, token), flush=True)
        print(replica_settings(env), flush=True)
        print(f"logs: {logs_dir}", flush=True)
        while service.proc is not None and service.proc.poll() is None:
            time.sleep(0.5)
        code = service.proc.returncode if service.proc is not None else None
        sys.exit(f"the service exited ({code}); see {service.log}")
    finally:
        service.stop()


def serve_replicas(n: int, env: dict[str, str], logs_dir: Path, token: str | None) -> None:
    """``n`` services and HAProxy on :8100 until one of them exits or we are stopped."""
    with Replicas(n, env, logs_dir, port=SERVICE_PORT) as replicas:
        print(curl_lines(replicas.url, token), flush=True)
        for i, url in enumerate(replicas.replica_urls):
            print(f"replica{i}: {url} (log {logs_dir / f'replica{i}.log'})", flush=True)
        print(f"HAProxy on {replicas.url} in front of them (log {logs_dir / 'haproxy.log'})", flush=True)
        print(replica_settings(env), flush=True)
        while all(proc is not None and proc.poll() is None for proc in replicas.procs):
            if replicas.proxy is None or replicas.proxy.proc is None or replicas.proxy.proc.poll() is not None:
                sys.exit(f"HAProxy exited; see {logs_dir / 'haproxy.log'}")
            time.sleep(0.5)
        gone = [i for i, proc in enumerate(replicas.procs) if proc is None or proc.poll() is not None]
        sys.exit(f"replica{gone[0]} exited; see {logs_dir / f'replica{gone[0]}.log'}")


if __name__ == "__main__":
    main()
