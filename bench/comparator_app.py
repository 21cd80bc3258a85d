"""The original plan's design, as the bench's comparator: FastAPI's ``StreamingResponse`` on uvicorn.

An async generator over ``AsyncLetta``'s stream (``messages.create(streaming=True,
stream_tokens=True)``), the plan's mapping of each chunk to ``{"type": ...}`` and
``json.dumps`` per chunk → ``data: {json}\\n\\n``.  It runs in its own environment
(``.stack/comparator-venv``: fastapi, uvicorn, letta-client, httpx from PyPI, made by
:func:`bench.comparator.ensure_venv`) and imports nothing of this project's.

``python -m bench.comparator_app --port P --letta URL [--pool N]``: ``--pool 0`` keeps
letta-client's default client (a 100-connection pool); ``--pool N`` gives it an httpx
client with an N-connection pool.  Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from letta_client import AsyncLetta


def make_app(letta_url: str, pool: int) -> FastAPI:
    http_client = (
        httpx.AsyncClient(limits=httpx.Limits(max_connections=pool, max_keepalive_connections=min(pool, 100)))
        if pool > 0
        else None
    )
    client = AsyncLetta(base_url=letta_url, http_client=http_client) if http_client else AsyncLetta(base_url=letta_url)
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/chat/stream")
    async def chat_stream(request: Request) -> Any:
        body = await request.json()
        agent_id, message = body["agent_id"], body["message"]

        async def events() -> AsyncIterator[str]:
            stream = await client.agents.messages.create(
                agent_id,
                streaming=True,
                input=message,
                stream_tokens=True,
                include_pings=True,
                enable_thinking="true" if body.get("enable_thinking", True) else "false",
            )
            stop_reason = None
            async for chunk in stream:
                kind = getattr(chunk, "message_type", None)
                if kind == "reasoning_message":
                    event: dict[str, Any] | None = {"type": "status", "content": "Thinking..."}
                elif kind == "tool_call_message":
                    name = getattr(chunk.tool_call, "name", None)
                    event = {"type": "status", "content": f"Using {name}..."} if name else None
                elif kind == "assistant_message":
                    event = {"type": "message", "content": chunk.content}
                elif kind == "stop_reason":
                    stop_reason = chunk.stop_reason
                    event = None
                else:
                    event = None
                if event is not None:
                    yield f"data: {json.dumps(event)}\n\n"
            yield f"data: {json.dumps({'type': 'done', 'stop_reason': stop_reason})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": type(exc).__name__}, status_code=502)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.comparator_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--letta", required=True)
    parser.add_argument("--pool", type=int, default=0)
    args = parser.parse_args()
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvicorn.run(
        make_app(args.letta, args.pool),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
