"""A stand-in letta-stream service that replays recorded SSE streams, for the pipe's edge cases.

The message text picks the scenario; every request is recorded so tests can assert
that background tasks never reached the service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
from quart import Quart, Response, request

from pipeline.events import Done, Error, Event, Keepalive, Reasoning, Status, Text, ToolCall, ToolResult, Usage
from pipeline.sse import SSEEncoder

HAPPY: list[Event] = [
    Keepalive(),
    Status("Thinking..."),
    Reasoning("Let me "),
    Reasoning("think."),
    Status("Using conversation_search..."),
    ToolCall("conversation_search", '{"query": "x"}', "c1"),
    ToolResult("conversation_search", True, "found", "c1"),
    Keepalive(),
    Text("Hello"),
    Text(", student"),
    Done("end_turn", Usage(100, 12, 112, 1)),
]
USAGE = {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}
"""What the pipe yields for HAPPY's usage (and REST's)."""


def encode(events: list[Event], *, first: bool = True) -> bytes:
    """Frames as the service sends them; ``first=False`` continues a stream (no ``retry:``)."""
    encoder = SSEEncoder(retry_ms=3000 if first else None)
    return b"".join(encoder.encode(e) for e in events)


TURN = "turn-7"
RESUMABLE: list[Event] = [
    Keepalive(cursor=f"{TURN}:0"),
    Status("Thinking...", cursor=f"{TURN}:1"),
    Reasoning("Hmm.", cursor=f"{TURN}:2"),
    Text("Hello", cursor=f"{TURN}:3"),
    Text(", stu", cursor=f"{TURN}:4"),
]
"""The first connection of a turn that drops (ids ``<turn id>:<seq>``, as the service numbers frames): it
ends in the middle of the next frame."""
REST: list[Event] = [Text("dent", cursor=f"{TURN}:5"), Done("end_turn", Usage(100, 12, 112, 1), cursor=f"{TURN}:6")]
"""The rest of that turn, frame by frame."""
CUT = b'id: turn-7:9\nevent: message\ndata: {"type":"message","con'


def after(last_id: str, events: list[Event]) -> list[Event]:
    """The frames after ``last_id``, as the service replays a turn's log."""
    seq = int(last_id.rpartition(":")[2])
    return [e for e in events if e.cursor is not None and int(e.cursor.rpartition(":")[2]) > seq]


SCENARIOS: dict[str, bytes] = {
    "happy": encode(HAPPY),
    "unknown": encode([Text("a")])
    + b'data: {"type": "citation", "url": "x"}\n\n'
    + encode([Text("b"), Done()], first=False),
    "malformed": encode([Text("a")])
    + b'data: {not json\n\ndata: {"type": "message"}\n\n'
    + encode([Done()], first=False),
    "abrupt": encode([Status("Thinking..."), Text("half an ans")]),
    "error": encode([Text("Partial"), Error("model exploded", "llm_api_error")]),
}


AGENT_TYPES: list[dict[str, str]] = [
    {"id": "tutor", "name": "Letta Tutor", "description": "essays"},
    {"id": "study-coach", "name": "Study Coach", "description": "study plans"},
]
"""What ``GET /agent-types`` answers (tests may replace ``app.config["agent_types"]``)."""


def create_app() -> Quart:
    app = Quart(__name__)
    app.config["calls"] = []
    app.config["auth"] = []

    @app.before_request
    async def record_auth() -> None:
        app.config["auth"].append(request.headers.get("Authorization"))

    @app.get("/")
    async def root() -> str:
        return "scripted"

    app.config["agent_types"] = AGENT_TYPES
    app.config["agent_types_status"] = 200

    @app.get("/agent-types")
    async def agent_types() -> tuple[dict[str, Any], int]:
        app.config["calls"].append(("agent-types", None))
        status = app.config["agent_types_status"]
        if status != 200:
            return {"error": "unavailable", "message": "scripted failure"}, status
        return {"agent_types": app.config["agent_types"]}, 200

    @app.post("/agents")
    async def agents() -> tuple[dict[str, Any], int]:
        body = await request.get_json()
        app.config["calls"].append(("agents", body))
        return {"agent_id": f"agent-{body['user_id']}", "created": True}, 201

    @app.post("/chat/cancel")
    async def cancel() -> tuple[dict[str, Any], int]:
        app.config["calls"].append(("cancel", await request.get_json()))
        return {"cancelling": True}, 202

    @app.post("/chat/stream")
    async def stream() -> Any:
        body = await request.get_json()
        resume_from = request.headers.get("Last-Event-ID")
        app.config["calls"].append(("stream", body) if resume_from is None else ("resume", resume_from))
        scenario = body["message"] or "happy"  # a picture alone
        if scenario in ("drop", "drop-twice"):
            if resume_from is None:
                data = encode(RESUMABLE) + CUT
            elif scenario == "drop":
                data = encode(after(resume_from, RESUMABLE + REST), first=False)
            else:  # every resumed stream drops too, before the end
                data = encode(after(resume_from, RESUMABLE + REST[:1]), first=False) + CUT
            scenario = "bytes"
        if scenario == "stop-me":
            encoder = SSEEncoder()

            async def frames() -> AsyncIterator[bytes]:
                for event in RESUMABLE:
                    yield encoder.encode(event)
                await anyio.sleep_forever()

            response = Response(frames(), 200, {"Content-Type": "text/event-stream"})
            response.timeout = None
            return response
        if scenario == "refuse":
            return {"error": "upstream_unavailable", "message": "the agent server cannot be reached"}, 503
        if scenario == "busy":
            return {"error": "turn_in_progress", "message": "busy"}, 409
        if scenario == "slow":  # one frame every 50 ms, so a reader can be stopped mid-stream
            encoder = SSEEncoder()

            async def frames() -> AsyncIterator[bytes]:
                for event in HAPPY:
                    yield encoder.encode(event)
                    await anyio.sleep(0.05)

        else:
            data = data if scenario == "bytes" else SCENARIOS[scenario]

            async def frames() -> AsyncIterator[bytes]:
                for i in range(0, len(data), 7):  # small pieces: frames cross chunk borders
                    yield data[i : i + 7]
                    await anyio.lowlevel.checkpoint()

        response = Response(frames(), 200, {"Content-Type": "text/event-stream"})
        response.timeout = None
        return response

    return app
