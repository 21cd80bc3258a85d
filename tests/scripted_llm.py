"""A scripted OpenAI-compatible model server for the local Letta stack.

Tests need a model whose answers are known in advance and which can be told
to think, call a tool, be slow or fail. Behaviour is chosen by markers in the
LAST user message (Letta adds its own system messages around it):

- ``[think]``    stream ``reasoning_content`` deltas (``REASONING``) before the answer
- ``[tool]``     first call a ``conversation_search`` tool; once the tool result is
                 the last message (role ``tool``), answer with text
- ``[long N]``   the answer is N words ``w1 w2 ... wN``
- ``[slow MS]``  MS milliseconds between streamed chunks (default ``DEFAULT_DELAY_MS``)
- ``[fail]``     HTTP 500 from the model
- otherwise      ``DEFAULT_ANSWER``

``expected_answer(prompt)`` gives the final answer text for a prompt. Answers
are streamed as word deltas (``"Hello!"``, ``" I"``, ...).

Pictures: ``image_parts(message)`` lists the ``image_url`` parts a request's message carried, and
``received_images(log, marker)`` reads them back from the request log (``--log-requests``): what the
model really got.

Run: ``python -m tests.scripted_llm --port P [--log-requests FILE]`` (127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request

MODEL_ID = "scripted"
DEFAULT_ANSWER = "Hello! I am the scripted model and this is my fixed answer."
REASONING = "Let me think about this scripted question first."
TOOL_NAME = "conversation_search"
TOOL_ARGUMENTS = '{"query": "scripted"}'
DEFAULT_DELAY_MS = 20
EMBEDDING_DIM = 1536

JSON = dict[str, Any]


@dataclass(frozen=True)
class Script:
    """What the model does for one request."""

    answer: str
    reasoning: str | None
    tool_call: bool
    delay_s: float
    fail: bool


def expected_answer(prompt: str) -> str:
    """The final assistant text the scripted model gives for ``prompt``."""
    long = re.search(r"\[long (\d+)\]", prompt)
    if long:
        return " ".join(f"w{i}" for i in range(1, int(long.group(1)) + 1))
    return DEFAULT_ANSWER


def word_deltas(text: str) -> list[str]:
    """Split text into deltas that concatenate back to it: ``["a", " b", " c"]``."""
    words = text.split(" ")
    return [words[0], *(" " + w for w in words[1:])]


def message_text(message: JSON) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def image_parts(message: JSON) -> list[str]:
    """The URLs of a message's ``image_url`` parts (``data:`` URLs for pictures sent inline)."""
    content = message.get("content")
    parts = content if isinstance(content, list) else []
    urls = [p.get("image_url") for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
    return [str(u.get("url") if isinstance(u, dict) else u) for u in urls]


def received_images(request_log: Path, marker: str) -> list[list[str]]:
    """For each logged chat request whose last user message contains ``marker``: that message's image URLs."""
    found: list[list[str]] = []
    if not request_log.exists():
        return found
    for line in request_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") != "chat":
            continue
        users = [m for m in entry["body"].get("messages", []) if m.get("role") == "user"]
        if users and marker in message_text(users[-1]):
            found.append(image_parts(users[-1]))
    return found


def script_for(messages: list[JSON]) -> Script:
    """Read the markers of the last user message; a tool result last means 'now answer'."""
    prompt = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    slow = re.search(r"\[slow (\d+)\]", prompt)
    after_tool = bool(messages) and messages[-1].get("role") == "tool"
    return Script(
        answer=expected_answer(prompt),
        reasoning=REASONING if "[think]" in prompt and not after_tool else None,
        tool_call="[tool]" in prompt and not after_tool,
        delay_s=(int(slow.group(1)) if slow else DEFAULT_DELAY_MS) / 1000,
        fail="[fail]" in prompt,
    )


def _chunk(completion_id: str, delta: JSON, finish: str | None = None) -> JSON:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage(script: Script) -> JSON:
    completion = len(script.answer.split())
    return {"prompt_tokens": 100, "completion_tokens": completion, "total_tokens": 100 + completion}


def stream_chunks(script: Script, completion_id: str) -> list[JSON]:
    """Every chunk of a streamed completion, in order (without the usage chunk)."""
    chunks = [_chunk(completion_id, {"role": "assistant", "content": ""})]
    if script.reasoning:
        chunks += [_chunk(completion_id, {"reasoning_content": d}) for d in word_deltas(script.reasoning)]
    if script.tool_call:
        call = {
            "index": 0,
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": TOOL_NAME, "arguments": ""},
        }
        chunks.append(_chunk(completion_id, {"tool_calls": [call]}))
        for part in (TOOL_ARGUMENTS[:10], TOOL_ARGUMENTS[10:]):
            args_delta = {"index": 0, "function": {"arguments": part}}
            chunks.append(_chunk(completion_id, {"tool_calls": [args_delta]}))
        chunks.append(_chunk(completion_id, {}, "tool_calls"))
        return chunks
    chunks += [_chunk(completion_id, {"content": d}) for d in word_deltas(script.answer)]
    chunks.append(_chunk(completion_id, {}, "stop"))
    return chunks


def completion(script: Script, completion_id: str) -> JSON:
    """The non-streamed equivalent of ``stream_chunks``."""
    message: JSON = {"role": "assistant", "content": None if script.tool_call else script.answer}
    if script.reasoning:
        message["reasoning_content"] = script.reasoning
    if script.tool_call:
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": TOOL_NAME, "arguments": TOOL_ARGUMENTS},
            }
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if script.tool_call else "stop"}],
        "usage": _usage(script),
    }


def embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector derived from the text's hash."""
    raw = b""
    counter = 0
    while len(raw) < dim * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(v % 2000) / 1000 - 1 for v in struct.unpack(f"<{dim}I", raw[: dim * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def create_app(request_log: Path | None = None) -> Quart:
    app = Quart(__name__)

    def log_body(kind: str, body: JSON) -> None:
        if request_log is not None:
            with request_log.open("a") as fh:
                fh.write(json.dumps({"kind": kind, "body": body}) + "\n")

    @app.get("/v1/models")
    async def models() -> JSON:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat() -> Response | tuple[JSON, int] | JSON:
        body: JSON = await request.get_json()
        log_body("chat", body)
        script = script_for(body.get("messages", []))
        if script.fail:
            return {"error": {"message": "scripted failure", "type": "server_error", "code": "scripted"}}, 500
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        if not body.get("stream"):
            return completion(script, completion_id)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            for chunk in stream_chunks(script, completion_id):
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(script.delay_s)
            if include_usage:
                usage = {**_chunk(completion_id, {}), "choices": [], "usage": _usage(script)}
                yield f"data: {json.dumps(usage)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        response = Response(events(), content_type="text/event-stream")
        response.timeout = None  # Quart would cut streams at 60 s otherwise
        return response

    @app.post("/v1/embeddings")
    async def embeddings() -> JSON:
        body: JSON = await request.get_json()
        log_body("embeddings", body)
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else [str(i) for i in inputs]
        dim = int(body.get("dimensions") or EMBEDDING_DIM)
        return {
            "object": "list",
            "model": body.get("model", MODEL_ID),
            "data": [{"object": "embedding", "index": i, "embedding": embedding(t, dim)} for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-requests", type=Path, default=None, help="append request bodies (JSON lines)")
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = "-"
    asyncio.run(serve(create_app(args.log_requests), config))


if __name__ == "__main__":
    main()
