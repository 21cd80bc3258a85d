"""
title: Fake streaming pipe (e2e harness only)
description: Streams a status line, reasoning and a chunked answer, to prove the browser harness works.
version: 0.1.0
"""

# Installed into OpenWebUI as a Function and imported by the tests (for answer_text()).
# Keep it self-contained: only the standard library and pydantic (which OpenWebUI ships).

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field

REASONING = ["Let me think ", "about this ", "for a moment."]


def answer_parts(chunks: int) -> list[str]:
    """The answer as the pipe yields it: ``chunks`` pieces, joined with nothing."""
    return [f"Part {i + 1} of the fake answer." + (" " if i + 1 < chunks else "") for i in range(chunks)]


def answer_text(chunks: int) -> str:
    """The full answer text for ``chunks`` pieces."""
    return "".join(answer_parts(chunks))


class Pipe:
    class Valves(BaseModel):
        answer_chunks: int = Field(default=10, description="How many answer pieces to stream")
        delay_ms: int = Field(default=200, description="Pause before each piece")

    def __init__(self) -> None:
        self.valves = self.Valves()

    def pipe(
        self,
        body: dict[str, Any],
        __event_emitter__: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        __task__: str | None = None,
    ) -> str | AsyncIterator[dict[str, Any]]:
        if __task__ is not None:
            # Title / tags / follow-up generation: answer at once, without streaming.
            if "title" in str(__task__):
                return json.dumps({"title": "Fake pipe chat"})
            return json.dumps({"tags": [], "follow_ups": []})
        return self._stream(self.valves.answer_chunks, self.valves.delay_ms / 1000, __event_emitter__)

    async def _stream(
        self,
        chunks: int,
        delay: float,
        emit: Callable[[dict[str, Any]], Awaitable[None]] | None,
    ) -> AsyncIterator[dict[str, Any]]:
        async def status(description: str, done: bool, hidden: bool = False) -> None:
            if emit is not None:
                await emit({"type": "status", "data": {"description": description, "done": done, "hidden": hidden}})

        await status("Thinking…", False)
        try:
            await asyncio.sleep(1.0)  # long enough for a browser to see the status line
            for piece in REASONING:
                await asyncio.sleep(delay)
                yield {"choices": [{"delta": {"reasoning_content": piece}}]}
            for piece in answer_parts(chunks):
                await asyncio.sleep(delay)
                yield {"choices": [{"delta": {"content": piece}}]}
        except (asyncio.CancelledError, GeneratorExit):
            # The stop button cancels the request task (inside our sleep, or while OpenWebUI handles a chunk we
            # yielded, and then we are closed at that yield); clear the status line, then let it propagate.
            await status("Stopped", True, hidden=True)
            raise
        await status("Done", True, hidden=True)
