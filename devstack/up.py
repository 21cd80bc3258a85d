"""``task up``: the whole local stack in one command.

Embedded Postgres → scripted LLM (or a real provider when ``OPENAI_API_KEY`` is set)
→ Letta server → the letta-stream service on hypercorn (``hypercorn app:app -c
hypercorn.toml``), each waited for until healthy.  Prints the curl lines to try,
then waits; Ctrl-C (or SIGTERM) stops everything in reverse order, by PID.  The
data directory (``.stack/data``) is kept, so agents survive a restart.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from devstack._proc import StackError, base_env, spawn, stop, wait_http_ok
from devstack.stack import REPO_ROOT, LocalStack, _raise_keyboard_interrupt

SERVICE_URL = "http://127.0.0.1:8100"


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


def service_token() -> str | None:
    """The token to require: ``SERVICE_TOKEN`` if set, none with ``SERVICE_AUTH=off``, else a new one."""
    if os.environ.get("SERVICE_AUTH", "on").strip().lower() == "off":
        return None
    return os.environ.get("SERVICE_TOKEN") or secrets.token_urlsafe(24)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="task up", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".stack" / "data")
    args = parser.parse_args(argv)
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
            )
            log = stack.logs_dir / "service.log"
            proc = spawn([sys.executable, "-m", "hypercorn", "app:app", "-c", "hypercorn.toml"], log, env, REPO_ROOT)
            try:  # the service stops first, then the stack in reverse order
                wait_http_ok(f"{SERVICE_URL}/health", 30, lambda: proc.poll() is None, "letta-stream service", log)
                print(curl_lines(SERVICE_URL, token), flush=True)
                print(f"logs: {stack.logs_dir}", flush=True)
                while proc.poll() is None:
                    time.sleep(0.5)
                sys.exit(f"the service exited ({proc.returncode}); see {log}")
            finally:
                stop(proc)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    except StackError as exc:
        sys.exit(f"the local stack failed to start:\n{exc}")


if __name__ == "__main__":
    main()
