"""Part 6: the real Letta server (0.16.8) with the scripted LLM, direct vs through the service.

Runs alternate (direct, service, direct, ...) on one agent, one turn at a time (Letta
interleaves concurrent turns of one agent).  The prompt ``[long N] [slow 0]`` makes
the scripted model stream N word deltas with no pause.  Every run's text must be
exactly ``w1 ... wN``.  One raw request also records how the real stream ends
(the emulator copies that framing).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from letta_client import AsyncLetta
from letta_client.types.agents import AssistantMessage

from devstack.stack import REPO_ROOT, LocalStack

from .client import BenchError, StreamResult, one_stream
from .latency import post_json
from .procs import Child
from .stats import median, r


def expected(words: int) -> str:
    return " ".join(f"w{i}" for i in range(1, words + 1))


async def direct(client: AsyncLetta, agent_id: str, prompt: str) -> tuple[float, float, str]:
    began = time.monotonic_ns()
    first = 0
    parts = []
    stream = await client.agents.messages.create(  # the same call the service makes
        agent_id, streaming=True, input=prompt, stream_tokens=True, include_pings=True, enable_thinking="false"
    )
    async with stream:
        async for chunk in stream:
            if isinstance(chunk, AssistantMessage) and isinstance(chunk.content, str):
                first = first or time.monotonic_ns()
                parts.append(chunk.content)
    return (first - began) / 1e6, (time.monotonic_ns() - began) / 1e6, "".join(parts)


async def raw_tail(url: str, agent_id: str) -> list[str]:
    """The last lines of a real stream, as bytes on the wire."""
    body = {"input": "hello", "streaming": True, "stream_tokens": True, "include_pings": True}
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("POST", f"{url}/v1/agents/{agent_id}/messages", json=body) as response,
    ):
        text = (await response.aread()).decode()
    frames = [f for f in text.split("\n\n") if f]
    return [f[:80] for f in frames[-3:]]


async def _via_service(svc: Child, agent_id: str, prompt: str, want: str, i: int) -> StreamResult:
    body = {"agent_id": agent_id, "enable_thinking": False, "message": prompt}
    for _ in range(100):  # the service frees the agent just after a stream ends: 409 until then
        res = await one_stream("127.0.0.1", svc.port, "/chat/stream", body, limit_s=120, stamped=False)
        if res.status != 409:
            break
        await asyncio.sleep(0.02)
    if "".join(res.text) != want or not res.ended:
        raise BenchError(f"real Letta via service run {i}: wrong text or no done ({res.status} {res.other[:2]})")
    return res


async def compare(letta_url: str, svc: Child, agent_id: str, words: int, runs: int) -> dict[str, Any]:
    prompt = f"bench [long {words}] [slow 0]"
    want = expected(words)
    client = AsyncLetta(base_url=letta_url, timeout=120, max_retries=0)
    rows: dict[str, list[tuple[float, float]]] = {"direct (AsyncLetta)": [], "through /chat/stream": []}
    try:
        tail = await raw_tail(letta_url, agent_id)
        for i in range(runs + 1):
            if i % 2:  # alternate which path goes first: Letta's turn time drifts as the history grows
                res = await _via_service(svc, agent_id, prompt, want, i)
                ttfe, total, text = await direct(client, agent_id, prompt)
            else:
                ttfe, total, text = await direct(client, agent_id, prompt)
                res = await _via_service(svc, agent_id, prompt, want, i)
            if text != want:
                raise BenchError(f"real Letta direct run {i}: wrong text ({len(text)} chars)")
            if i:  # run 0 warms up
                rows["direct (AsyncLetta)"].append((ttfe, total))
                rows["through /chat/stream"].append(
                    ((res.first_text_ns - res.started_ns) / 1e6, (res.ended_ns - res.started_ns) / 1e6)
                )
    finally:
        await client.close()
    out: dict[str, Any] = {"stream_end_on_wire": tail, "words": words}
    for name, vals in rows.items():
        out[name] = {"ttfe_ms": r(median([v[0] for v in vals]), 1), "total_ms": r(median([v[1] for v in vals]), 1)}
    return out


def run(quick: bool, runs: int, log_dir: Path) -> dict[str, Any]:
    words = 50 if quick else 200
    with tempfile.TemporaryDirectory(prefix="bench-letta-") as data, LocalStack(REPO_ROOT, Path(data)) as stack:
        svc = Child(
            "bench.service_proc",
            "--letta",
            stack.letta_url,
            "--window",
            "0.05",
            "--model",
            stack.model_handle,
            "--embedding",
            stack.embedding_handle,
            health="/health",
            log=log_dir / "service-real.log",
        )
        with svc:
            agent_id = post_json(svc.url + "/agents", {"user_id": "bench", "agent_type": "tutor"})["agent_id"]
            out = asyncio.run(compare(stack.letta_url, svc, agent_id, words, runs))
            out["stack_startup_s"] = stack.startup_seconds
    print(f"  real Letta: {out}", flush=True)
    return out
