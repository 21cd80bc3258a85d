"""A fast, minimal Letta REST API emulator on raw asyncio streams (HTTP/1.1, keep-alive).

It serves what letta-stream calls: ``GET /v1/health/``, ``GET /v1/agents/`` (tag
filter, ``after`` paging), ``GET /v1/agents/{id}``, ``POST /v1/agents/``,
``POST /v1/agents/{id}/messages`` with ``streaming: true`` (and the older ``.../messages/stream``)
and ``POST /v1/agents/{id}/messages/cancel``.  Like a Letta without Redis, it refuses
``background: true`` with 503 (the service then streams without resume).

The stream is framed like Letta 0.16.8's: ``data: {json}\\n\\n`` chunks with no
``event:`` lines (letta-client's ``AsyncStream`` only yields events whose ``event`` is
unset), a ``ping`` first, ``assistant_message`` deltas, ``stop_reason``,
``usage_statistics`` and a final ``data: [DONE]\\n\\n`` (the SDK stops at it).

What a stream does is chosen by markers in the message text, so the service under
test passes them through untouched:

- ``[count N]``   N assistant deltas (default 100)
- ``[rate R]``    R deltas per second, scheduled on absolute times (0 = as fast as possible)
- ``[keepalive S]`` keepalive-only: a ping every S seconds, never ends
- ``[pad N]``     N more characters in every delta (bulk, for clients that stop reading)

Each delta's ``content`` is ``"<seq>@<CLOCK_MONOTONIC ns>;"`` stamped just before
the write, so a reader on the same machine measures per-event delay end to end.

Run: ``python -m bench.letta_emulator --port P`` (binds 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]
NOW = datetime.now(UTC).isoformat()


def stamp(seq: int) -> str:
    """The content of delta ``seq``: its number and its send time."""
    return f"{seq}@{time.monotonic_ns()};"


def parse_stamps(text: str) -> list[tuple[int, int]]:
    """``(seq, sent_ns)`` for every stamp in ``text`` (merged deltas hold several)."""
    out = []
    for part in text.split(";"):
        if part:
            seq, _, ns = part.partition("@")
            out.append((int(seq), int(ns)))
    return out


def _marker(text: str, name: str, default: float) -> float:
    found = re.search(rf"\[{name} ([0-9.]+)\]", text)
    return float(found.group(1)) if found else default


def sse(obj: JSON | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def ping(run_id: str) -> JSON:
    """A ``LettaPing`` as the server dumps it (``date`` is required for the SDK to parse it as one)."""
    return {"message_type": "ping", "id": f"ping-{uuid.uuid4()}", "date": NOW, "run_id": run_id}


def chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Emulator:
    """The state of the emulated server: agents, and counters for sanity checks."""

    def __init__(self) -> None:
        self.agents: dict[str, JSON] = {}
        self.streams_open = 0
        self.streams_total = 0
        self.cancels = 0
        self.runs: dict[str, asyncio.Event] = {}
        """Open runs, set when cancelled: like Letta, a cancel ends the run's stream with ``stop_reason: cancelled``."""
        self.latest: dict[str, str] = {}

    def agent(self, body: JSON) -> JSON:
        agent_id = f"agent-{uuid.uuid4()}"
        agent: JSON = {
            "id": agent_id,
            "name": body.get("name") or agent_id,
            "tags": list(body.get("tags") or []),
            "metadata": body.get("metadata") or {},
            "agent_type": body.get("agent_type") or "letta_v1_agent",
            "created_at": NOW,
            "system": "",
            "memory": {"blocks": []},
            "tools": [],
            "sources": [],
        }
        self.agents[agent_id] = agent
        return agent

    def list_agents(self, query: dict[str, list[str]]) -> list[JSON]:
        tags = query.get("tags", [])
        match_all = query.get("match_all_tags", ["false"])[0] == "true"
        found = []
        for agent in self.agents.values():
            have = set(agent["tags"])
            if not tags or (all(t in have for t in tags) if match_all else any(t in have for t in tags)):
                found.append(agent)
        after = query.get("after", [None])[0]
        if after is not None:
            ids = [a["id"] for a in found]
            found = found[ids.index(after) + 1 :] if after in ids else []
        limit = int(query.get("limit", ["50"])[0])
        return found[:limit]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                if not await self.route(method, target, raw, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, target: str, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        url = urlsplit(target)
        path = url.path.rstrip("/")
        query = parse_qs(url.query)
        parts = path.split("/")
        if path == "/v1/health":
            return await self.reply(writer, 200, {"version": "0.16.8-emulator", "status": "ok"})
        if path == "/v1/agents" and method == "GET":
            return await self.reply(writer, 200, self.list_agents(query))
        if path == "/v1/agents" and method == "POST":
            return await self.reply(writer, 200, self.agent(json.loads(raw or b"{}")))
        if len(parts) == 4 and parts[2] == "agents" and method == "GET":
            agent = self.agents.get(parts[3])
            if agent is None:
                return await self.reply(writer, 404, {"detail": f"Agent {parts[3]} not found"})
            return await self.reply(writer, 200, agent)
        if len(parts) == 6 and parts[4:] == ["messages", "stream"] and method == "POST":
            return await self.stream(parts[3], json.loads(raw or b"{}"), writer)
        if len(parts) == 5 and parts[4] == "messages" and method == "POST":  # messages.create(streaming=True)
            body = json.loads(raw or b"{}")
            if not body.get("streaming"):
                return await self.reply(writer, 400, {"detail": "the emulator serves streaming=true only"})
            return await self.stream(parts[3], body, writer)
        if len(parts) == 6 and parts[4:] == ["messages", "cancel"] and method == "POST":
            self.cancels += 1
            run_ids = json.loads(raw or b"{}").get("run_ids") or [self.latest.get(parts[3], "")]
            found = {r: "cancelled" for r in run_ids if r in self.runs}
            for run_id in found:
                self.runs[run_id].set()
            return await self.reply(writer, 200, found)
        if path == "/bench/agents" and method == "POST":  # bulk creation for the concurrency bench
            spec = json.loads(raw)
            made = [
                self.agent({**spec["agent"], "tags": [*spec["agent"]["tags"], f"user:{spec['prefix']}-{i}"]})
                for i in range(spec["n"])
            ]
            return await self.reply(writer, 200, [a["id"] for a in made])
        if path == "/bench/stats":
            stats = {"open": self.streams_open, "total": self.streams_total, "cancels": self.cancels}
            return await self.reply(writer, 200, stats)
        return await self.reply(writer, 404, {"detail": "not found"})

    async def reply(self, writer: asyncio.StreamWriter, status: int, body: Any) -> bool:
        data = json.dumps(body).encode()
        writer.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(data), data)
        )
        await writer.drain()
        return True

    async def stream(self, agent_id: str, body: JSON, writer: asyncio.StreamWriter) -> bool:
        if agent_id not in self.agents:
            return await self.reply(writer, 404, {"detail": f"Agent {agent_id} not found"})
        if body.get("background") is True:  # as Letta 0.16.8 answers when it has no Redis
            detail = "Background streaming requires Redis to be running. Please ensure Redis is properly configured."
            return await self.reply(writer, 503, {"detail": detail})
        text = str(body.get("input") or "")
        run_id = f"run-{uuid.uuid4()}"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        self.streams_open += 1
        self.streams_total += 1
        cancelled = self.runs[run_id] = asyncio.Event()
        self.latest[agent_id] = run_id
        try:
            writer.write(chunked(sse(ping(run_id))))
            await writer.drain()
            body = asyncio.ensure_future(self.body(run_id, text, writer))
            stopper = asyncio.ensure_future(cancelled.wait())
            await asyncio.wait({body, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (body, stopper):
                task.cancel()
            await asyncio.gather(body, stopper, return_exceptions=True)
            stop_reason = "cancelled" if cancelled.is_set() else "end_turn"
            writer.write(chunked(sse({"message_type": "stop_reason", "stop_reason": stop_reason, "run_id": run_id})))
            writer.write(
                chunked(
                    sse(
                        {
                            "message_type": "usage_statistics",
                            "completion_tokens": 1,
                            "prompt_tokens": 1,
                            "total_tokens": 2,
                            "step_count": 1,
                            "run_id": run_id,
                        }
                    )
                )
            )
            writer.write(chunked(sse("[DONE]")) + b"0\r\n\r\n")
            await writer.drain()
            return True
        finally:
            self.streams_open -= 1
            self.runs.pop(run_id, None)
            if self.latest.get(agent_id) == run_id:
                del self.latest[agent_id]

    async def body(self, run_id: str, text: str, writer: asyncio.StreamWriter) -> None:
        """What the run writes until it ends by itself (a cancel cuts it short)."""
        keepalive = _marker(text, "keepalive", 0.0)
        if keepalive > 0:
            while True:
                await asyncio.sleep(keepalive)
                writer.write(chunked(sse(ping(run_id))))
                await writer.drain()
        count, rate, pad = (
            int(_marker(text, "count", 100)),
            _marker(text, "rate", 0.0),
            int(_marker(text, "pad", 0)),
        )
        await self.deltas(run_id, count, rate, writer, pad)

    async def deltas(self, run_id: str, count: int, rate: float, writer: asyncio.StreamWriter, pad: int = 0) -> None:
        msg_id = f"message-{uuid.uuid4()}"
        start = time.monotonic()
        for seq in range(count):
            if rate > 0:
                delay = start + seq / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            chunk = {
                "message_type": "assistant_message",
                "id": msg_id,
                "date": NOW,
                "run_id": run_id,
                "seq_id": seq,
                "content": stamp(seq) + "x" * pad,
            }
            writer.write(chunked(sse(chunk)))
            await writer.drain()
            if rate <= 0 and seq % 16 == 15:
                await asyncio.sleep(0)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve(port: int, agents: list[JSON]) -> None:
    emulator = Emulator()
    for body in agents:
        emulator.agent(body)
    server = await asyncio.start_server(emulator.handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.letta_emulator")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.port, []))


if __name__ == "__main__":
    main()
