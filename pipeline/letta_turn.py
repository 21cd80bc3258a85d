"""One agent turn streamed from a Letta server, and the source stage that reads it.

``AsyncLetta.agents.messages.create(streaming=True)`` (the successor of the deprecated
``messages.stream()``, same server path in Letta 0.16.8) is a coroutine returning an ``AsyncStream``:
:func:`start_turn` awaits it, so an unknown agent or an unreachable server raises
*before* anything is streamed (a web view can still answer 404/502).

Closing Letta's stream does not end the run on the server — the model would keep
working for nobody.  :func:`letta_source` therefore cancels the run through Letta's
cancel API whenever the stream was not read to its end (or hands the turn to an
``unfinished`` hook, which may queue the cancel or leave the run to whoever takes it over).

Letta's background mode (runs kept in Letta's Redis and replayable) is not used: it
delivers a run's chunks in half-second batches.  The service resumes turns from its own
log instead (``app/turn_log.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
import attrs
import httpx
from letta_client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncLetta,
    AsyncStream,
    omit,
)

from .content import Image, letta_input
from .events import Error
from .halt import Halt
from .letta_raw import RawLettaStream, open_raw_stream
from .source import CLOSE_TIMEOUT, aclose_quietly, read_pushed, read_source
from .streams import Send

log = logging.getLogger(__name__)


@attrs.define
class LettaTurn:
    """An open stream of one turn of ``agent_id``; remembers the ``run_id`` once a chunk names it.

    ``control`` is the client that cancels the run.  A service holding thousands of
    streams gives it its own small connection pool, so a burst of cancels is not
    queued behind (or slowed by) the pool the streams occupy.
    """

    client: AsyncLetta
    agent_id: str
    stream: AsyncStream[Any] | RawLettaStream
    run_id: str | None = None
    on_run: Callable[[str], object] | None = None
    """Called once when a chunk first names the run (before it is passed on): from the reading task, or, for a
    stream that pushes (:meth:`pushing`), from a loop callback — so it must not need a task (start none)."""
    control: AsyncLetta | None = None

    def chunks(self) -> AsyncIterator[Any]:
        """The stream's chunks (SDK models, or ``dict`` messages from a raw stream), noting the run id on the way.

        A raw stream notes it itself (:attr:`RawLettaStream.on_run`), so its chunks come
        straight from it, with no generator of ours in between (one step less per chunk).
        """
        stream = self.stream
        if isinstance(stream, RawLettaStream):
            if self.run_id is None:
                stream.on_run = self._ran
            return aiter(stream)
        return self._sdk_chunks(stream)

    def pushing(self) -> RawLettaStream | None:
        """The stream, if it can push its messages from the loop's callbacks (noting the run id as
        :meth:`chunks` does); ``None`` if it must be iterated."""
        stream = self.stream
        if not isinstance(stream, RawLettaStream) or not stream.pushes:
            return None
        if self.run_id is None:
            stream.on_run = self._ran
        return stream

    async def _sdk_chunks(self, stream: AsyncStream[Any]) -> AsyncIterator[Any]:
        async for chunk in stream:
            if self.run_id is None:
                run_id = getattr(chunk, "run_id", None)
                if isinstance(run_id, str):
                    self._ran(run_id)
            yield chunk

    def _ran(self, run_id: str) -> None:
        self.run_id = run_id
        if self.on_run is not None:
            self.on_run(run_id)

    async def cancel_run(self) -> None:
        """Ask Letta to cancel this turn's run (all of the agent's runs if the id is not known yet)."""
        client = self.control or self.client
        await client.agents.messages.cancel(self.agent_id, run_ids=[self.run_id] if self.run_id else omit)

    async def aclose(self) -> None:
        """Close the HTTP response under the stream."""
        await self.stream.close()


async def start_turn(
    client: AsyncLetta,
    agent_id: str,
    message: str,
    *,
    images: Sequence[Image] = (),
    stream_tokens: bool = True,
    thinking: bool = True,
    max_steps: int | None = None,
    control: AsyncLetta | None = None,
    raw: bool = True,
    conversation_id: str | None = None,
    otid: str | None = None,
) -> LettaTurn:
    """Send ``message`` (with ``images``, pictures pasted with it) to the agent and return its open stream.

    Raises the SDK's errors (``NotFoundError``, ``APIConnectionError``, ...) before
    any chunk is read.
    The caller owns the returned turn and must close it (:func:`letta_source` does).

    ``raw`` (the default) reads the response through :mod:`pipeline.letta_raw`: the
    chunks are Letta's JSON objects as ``dict`` values, which the mapper maps exactly as
    the SDK's models (``raw=False``), for a fraction of the cost.

    ``conversation_id`` sends the message into that conversation of the agent (its own
    history; the agent's memory blocks are shared); ``otid`` is stored on the user message.
    """
    params: dict[str, Any] = {
        **user_input(message, otid, images),
        "stream_tokens": stream_tokens,
        "include_pings": True,
        "enable_thinking": "true" if thinking else "false",
        "max_steps": max_steps if max_steps is not None else omit,
    }
    stream: AsyncStream[Any] | RawLettaStream
    if raw:
        stream = await open_raw_stream(client, agent_id, conversation_id, **params)
    elif conversation_id is not None:
        stream = await client.conversations.messages.create(conversation_id, streaming=True, **params)
    else:
        stream = await client.agents.messages.create(agent_id, streaming=True, **params)  # POST .../messages
    return LettaTurn(client, agent_id, stream, control=control)


def user_input(message: str, otid: str | None, images: Sequence[Image] = ()) -> dict[str, Any]:
    """The request fields carrying the user's message and its pictures (``messages`` with an ``otid`` when
    one is given, else ``input``)."""
    content = letta_input(message, images)
    if otid is None:
        return {"input": content}
    return {"messages": [{"role": "user", "content": content, "otid": otid}]}


def describe_upstream_error(exc: Exception) -> Error:
    """An :class:`Error` event for a failure of Letta or of the connection to it."""
    if isinstance(exc, APITimeoutError):
        return Error("The agent server took too long to answer.", "upstream_timeout")
    if isinstance(exc, APIConnectionError):
        return Error("The agent server could not be reached.", "upstream_unreachable")
    if isinstance(exc, APIStatusError):
        body = exc.body
        if isinstance(body, dict) and body.get("message_type") == "error_message":
            # Letta's own error event mid-stream (e.g. the model failed); the SDK raises it
            return Error(str(body.get("message") or "The agent failed."), str(body.get("error_type") or "letta_error"))
        return Error(f"The agent server answered {exc.status_code}: {exc.message}", "upstream_status")
    if isinstance(exc, httpx.HTTPError):
        return Error(f"The connection to the agent server failed: {exc}", "upstream_failed")
    return Error(f"Reading the agent's stream failed: {type(exc).__name__}", "upstream_failed")


Unfinished = Callable[[LettaTurn], Awaitable[None]]
"""What to do with a turn whose reading ended before its end (by default: cancel its run now)."""


SHUTTING_DOWN = Error("The service is restarting. Please send your message again in a moment.", "shutting_down")


async def letta_source(
    turn: LettaTurn,
    send: Send,
    *,
    cancel_timeout: float = CLOSE_TIMEOUT,
    unfinished: Unfinished | None = None,
    halt: Halt | None = None,
) -> None:
    """Read ``turn`` into ``send``; if it was not read to its end, cancel its run (or call ``unfinished``); close it.

    An upstream failure becomes one :class:`Error` item, so the stream ends with an
    ``error`` event instead of breaking.  A turn not read to its end has its run cancelled
    (``unfinished(turn)`` replaces that, e.g. to queue the cancel); then the stream's connection is
    released.  Both are shielded from the cancellation that may have caused them and
    bounded in time.  When ``halt`` is set, the turn ends with a ``shutting_down`` error
    event (and, not read to its end, has its run cancelled like any other).
    """
    finished = False
    try:
        pushing = turn.pushing()
        if pushing is not None:  # Letta's bytes handed over by the connection's callbacks: no task step per chunk
            finished = await read_pushed(
                pushing, send, on_error=describe_upstream_error, halt=halt, on_halt=lambda: SHUTTING_DOWN
            )
        else:
            finished = await read_source(
                turn.chunks(), send, on_error=describe_upstream_error, halt=halt, on_halt=lambda: SHUTTING_DOWN
            )
    finally:
        if not finished:
            if unfinished is None:
                await _cancel_run(turn, cancel_timeout)
            else:
                with anyio.move_on_after(cancel_timeout, shield=True):
                    await unfinished(turn)
        await aclose_quietly(turn)


async def _cancel_run(turn: LettaTurn, within: float) -> None:
    with anyio.move_on_after(within, shield=True) as waited:
        try:
            await turn.cancel_run()
        except Exception as exc:  # the turn ends unread: report, don't mask the cause
            log.warning("cancelling Letta run %s failed: %r", turn.run_id, exc)
    if waited.cancelled_caught:
        log.warning("cancelling Letta run %s timed out after %s s", turn.run_id, within)
