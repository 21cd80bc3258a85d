"""Calling the pipe the way OpenWebUI 0.12 does, and recording what it yields and emits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import attrs

from pipe.letta_pipe import Pipe


@attrs.define
class Outcome:
    returned: str | None = None
    chunks: list[Any] = attrs.Factory(list)
    statuses: list[dict[str, Any]] = attrs.Factory(list)

    @property
    def deltas(self) -> list[dict[str, Any]]:
        return [c["choices"][0]["delta"] for c in self.chunks if isinstance(c, dict) and "choices" in c]

    @property
    def content(self) -> str:
        return "".join([c for c in self.chunks if isinstance(c, str)] + [d.get("content", "") for d in self.deltas])

    @property
    def reasoning(self) -> str:
        return "".join(d.get("reasoning_content", "") for d in self.deltas)

    @property
    def usages(self) -> list[dict[str, Any]]:
        """Every usage object yielded (OpenWebUI adds them up)."""
        return [c["usage"] for c in self.chunks if isinstance(c, dict) and "usage" in c]

    @property
    def descriptions(self) -> list[str]:
        return [s["data"]["description"] for s in self.statuses]


def make_pipe(url: str, **valves: Any) -> Pipe:
    pipe = Pipe()
    pipe.valves = Pipe.Valves(SERVICE_URL=url, **valves)
    return pipe


async def run_pipe(
    pipe: Pipe,
    message: str,
    *,
    task: str | None = None,
    show_reasoning: bool = True,
    user_id: str = "student-1",
    stop_after_chunks: int | None = None,
    stop_between_chunks: bool = False,
    chat_id: str = "chat-1",
    metadata: dict[str, Any] | None = None,
    model: str = "letta_tutor",
    content: Any = None,
    files: list[dict[str, Any]] | None = None,
) -> Outcome:
    """One call of the pipe; ``content`` replaces the user message's content (e.g. a list of parts).

    ``stop_after_chunks``: the stop button after that many chunks, landing inside the pipe's read of
    the next one; with ``stop_between_chunks`` it lands while the reader handles the last chunk
    instead, and the generator is then closed at its ``yield`` (as OpenWebUI's task ends).
    """
    outcome = Outcome()

    async def emitter(event: dict[str, Any]) -> None:
        outcome.statuses.append(event)

    user_content = message if content is None else content
    body = {"model": model, "stream": task is None, "messages": [{"role": "user", "content": user_content}]}
    user = {"id": user_id, "name": "Ada", "valves": Pipe.UserValves(SHOW_REASONING=show_reasoning)}
    result = await pipe.pipe(
        body,
        __user__=user,
        __metadata__={"chat_id": chat_id, **(metadata or {})},
        __event_emitter__=emitter,
        __task__=task,
        __files__=files,
    )
    if isinstance(result, str):
        outcome.returned = result
        return outcome
    enough = asyncio.Event()

    async def consume() -> None:
        async for chunk in result:
            outcome.chunks.append(chunk)
            if stop_after_chunks is not None and len(outcome.chunks) >= stop_after_chunks:
                enough.set()
                if stop_between_chunks:
                    await asyncio.sleep(60)  # the reader's own work on the chunk: the stop lands here

    # OpenWebUI's stop button calls task.cancel() on the task reading the generator: do the same
    task = asyncio.create_task(consume())
    waiter = asyncio.create_task(enough.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if stop_between_chunks:
        await result.aclose()
    return outcome
