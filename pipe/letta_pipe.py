"""
title: Letta Tutor
author: letta-stream
version: 0.1.0
description: Talk to your own Letta tutor agent. Its thinking, tool use and answer stream live.
requirements: httpx-sse==0.4.3
"""

# One file, pasted into OpenWebUI (Admin → Functions).  It cannot import the
# letta-stream packages, so the little of the wire protocol it needs is mirrored
# here; tests/pipe/test_parity.py feeds the same recorded streams through this
# decoder and through pipeline/sse.py + pipeline/wire.py and expects the same events.
#
# Output style (verified in OpenWebUI 0.12): pipe() returns an async generator that
# yields OpenAI-style delta chunks — answer text as `content`, reasoning as
# `reasoning_content` (OpenWebUI's native "Thinking…" block).  The event emitter is
# used for status lines only; answer text is never sent as `message` events (the
# answer would go blank when the stream ends).
#
# One Pipe instance serves every request: per-request state lives in locals only.
#
# Attachments: pictures (OpenWebUI's `image_url` parts with base64 `data:` URLs) are sent to the
# service as `images`; other files are not readable by the tutor yet, so the answer starts with a
# note naming them and the student's own typed text is sent (not OpenWebUI's retrieval prompt).
# The turn's token usage is yielded once, as a chunk with a top-level `usage` (the message's info).
#
# Dropped streams: every frame's SSE id is a position in the agent's turn.  When the
# connection to the service drops (or a replica restarting ends it) before the turn
# ended, the pipe reconnects with `Last-Event-ID` (up to MAX_RESUMES times, backing off)
# and gets the rest of the same turn from any replica (no text twice, none lost).  The
# stop button is not a drop: the pipe tells the service (`POST /chat/cancel`) so the
# turn stops at once instead of waiting for a reconnect that will never come.
#
# A manifold (verified in OpenWebUI 0.12.4, functions.py): `pipes()` lists one model per
# agent type the service defines (`GET /agent-types`), so students pick a tutor in the
# model menu; OpenWebUI names each `<function id>.<type id>` and passes that id to `pipe()`
# as body["model"] (a workspace model built on one passes its base model's id).  The list
# is cached (TYPES_TTL); while the service can't be reached the last list is kept, or the
# AGENT_TYPE valve's type alone is listed, so chats never lose their model.

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

MAX_RESUMES = 5
"""Reconnects per turn (a rolling restart of every replica needs one per replica)."""

TYPES_TTL = 60.0
"""Seconds a list of agent types fetched from the service is reused (OpenWebUI lists models often)."""
TYPES_RETRY = 10.0
"""After a failed fetch, seconds before the service is asked again (model listings stay fast)."""

Emitter = Callable[[dict[str, Any]], Awaitable[None]]

THINKING = "Thinking..."
"""The service's status when the agent starts reasoning (docs/protocol.md)."""

KNOWN_TYPES = {"status", "reasoning", "message", "tool_call", "tool_result", "done", "error"}
REQUIRED_FIELDS: dict[str, dict[str, type]] = {
    "status": {"content": str},
    "reasoning": {"content": str},
    "message": {"content": str},
    "tool_call": {"name": str},
    "tool_result": {"ok": bool},
    "done": {},
    "error": {"message": str},
}


class ProtocolError(ValueError):
    """A data payload that is not a valid letta-stream event."""


class ServiceError(Exception):
    """The letta-stream service refused or failed a request; ``message`` is for the student."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- protocol: SSE data → event dict (mirrors pipeline.wire.parse_event) ---------------


def decode_event(data: str) -> dict[str, Any] | None:
    """The event in one SSE ``data`` payload; ``None`` for an unknown type (ignore it).

    Raises :class:`ProtocolError` for a payload that is not an event.
    """
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {data[:80]!r}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError(f"not an event object: {data[:80]!r}")
    kind = obj["type"]
    if kind not in KNOWN_TYPES:
        return None
    for name, expected in REQUIRED_FIELDS[kind].items():
        if type(obj.get(name)) is not expected:
            raise ProtocolError(f"bad {kind!r} event: {name} must be {expected.__name__}")
    return obj


# -- rendering: event → what OpenWebUI receives ----------------------------------------


def content_chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"delta": {"content": text}}]}


def reasoning_chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"delta": {"reasoning_content": text}}]}


def status(description: str, done: bool = False, hidden: bool = False) -> dict[str, Any]:
    return {"type": "status", "data": {"description": description, "done": done, "hidden": hidden}}


def refusal(response: httpx.Response) -> str:
    """A sentence for the student about a non-2xx answer of the service."""
    try:
        found = response.json()
        detail, field = found.get("message", ""), str(found.get("field") or "")
    except (ValueError, AttributeError):
        detail, field = "", ""
    if response.status_code in (502, 503, 504):
        return "Your tutor is unavailable right now. Please try again in a minute."
    if response.status_code in (401, 403):
        return "The tutor service refused this app's credentials; please tell your administrator."
    if response.status_code == 409:
        return "Your tutor is still answering your previous message. Please wait for it to finish."
    if response.status_code == 410:
        return "The connection to the tutor was interrupted and its answer can't be picked up again. Please resend."
    if response.status_code == 413:
        return "Your message and its pictures are too large for the tutor. Please send fewer or smaller pictures."
    if response.status_code == 400 and field.startswith("images"):
        return f"One of your pictures can't be sent to the tutor ({detail}). Nothing was sent."
    return f"The tutor service could not handle this message ({response.status_code}: {detail})."


def friendly_error(message: str) -> str:
    return f"\n\n⚠️ {message}"


# -- background tasks: answered here, never sent to the agent --------------------------


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (OpenWebUI may send content as a list of parts)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^;,]*)*;base64,(?P<data>.*)", re.S)


class AttachmentError(ValueError):
    """A picture of the student's message that cannot be read; ``str(exc)`` is for the student."""


def last_user_images(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The pictures of the last user message as the service takes them: ``[{"media_type", "data"}]``.

    OpenWebUI sends a pasted or uploaded picture as an ``image_url`` part with a base64 ``data:``
    URL.  Raises :class:`AttachmentError` for a part that is not one (nothing is sent then).
    """
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        parts = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
        images: list[dict[str, str]] = []
        for number, part in enumerate((p for p in parts if p.get("type") == "image_url"), start=1):
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            match = DATA_URL.fullmatch(url) if isinstance(url, str) else None
            try:
                if match is None:
                    raise ValueError("not a data: URL")
                base64.b64decode(match["data"], validate=True)
            except (ValueError, binascii.Error) as exc:
                raise AttachmentError(
                    f"Picture {number} of your message could not be read, so nothing was sent to your tutor. "
                    "Please attach it again."
                ) from exc
            images.append({"media_type": match["type"].lower(), "data": match["data"]})
        return images
    return []


def unreadable_files(files: list[dict[str, Any]] | None) -> list[str]:
    """The names of attached files the tutor cannot read (everything but pictures, which are sent)."""
    names: list[str] = []
    for item in files or []:
        if not isinstance(item, dict):
            continue
        found = item.get("file")
        inner: dict[str, Any] = found if isinstance(found, dict) else {}
        meta: dict[str, Any] = inner["meta"] if isinstance(inner.get("meta"), dict) else {}
        content_type = str(item.get("content_type") or meta.get("content_type") or "")
        if item.get("type") == "image" or content_type.startswith("image/"):
            continue
        names.append(str(item.get("name") or inner.get("filename") or meta.get("name") or "a file"))
    return names


def files_notice(names: list[str]) -> str:
    """The note the student reads above the answer when files were attached."""
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"📎 *Your tutor can't read attached files yet ({listed}); it only got your typed message"
        " and any pictures. Paste the parts you want it to see into your message.*\n\n"
    )


def usage_chunk(usage: Any) -> dict[str, Any] | None:
    """OpenWebUI's usage chunk (a top-level ``usage`` object, OpenAI's names) for a ``done`` event's usage."""
    if not isinstance(usage, dict):
        return None
    counts = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens") if type(usage.get(k)) is int}
    return {"usage": counts} if counts else None


def task_answer(task: str, body: dict[str, Any]) -> str:
    """A local answer for OpenWebUI's title/tags/follow-up generation calls."""
    if task == "title_generation":
        text = ""
        for message in body.get("messages", []):
            if "### Chat History:" in str(message.get("content", "")):
                history = str(message["content"]).split("### Chat History:", 1)[1]
                text = next((line for line in history.splitlines() if line.strip().startswith("USER:")), "")
                text = text.split("USER:", 1)[-1]
                break
        text = " ".join((text or last_user_text(body.get("messages", []))).split())
        title = (text[:50].rstrip() + "…") if len(text) > 50 else text
        return json.dumps({"title": title or "Tutoring session"})
    if task == "tags_generation":
        return json.dumps({"tags": ["Tutoring"]})
    if task == "follow_up_generation":
        return json.dumps({"follow_ups": []})
    return ""


# -- which chat and message this is -----------------------------------------------------


def chat_ids(metadata: dict[str, Any] | None, chat_id: str | None) -> dict[str, str | None]:
    """The ids the service needs to keep one Letta conversation per chat and to spot regenerates/edits.

    OpenWebUI sends chat_id "" for API calls without a chat: those go to the agent's default history.
    ``user_message_id`` is the same again when the student regenerates; an edit is a new user
    message with the old one's parent.
    """
    meta = metadata or {}
    chat = chat_id or meta.get("chat_id") or None
    if not isinstance(chat, str):
        chat = None
    found = meta.get("user_message")
    user_message: dict[str, Any] = found if isinstance(found, dict) else {}
    ids = {
        "chat_id": chat,
        "user_message_id": meta.get("user_message_id") or user_message.get("id"),
        "parent_message_id": user_message.get("parentId"),
    }
    # ids are only sent within a chat, and only as non-empty strings (the service refuses anything else)
    return {k: v if chat and isinstance(v, str) and v.strip() else None for k, v in ids.items()}


# -- one turn as the student sees it ---------------------------------------------------


class _Turn:
    """One turn's stream(s) → what OpenWebUI shows.  Remembers the position (``last_id``) for a resume."""

    def __init__(self, emit: Emitter | None, show_reasoning: bool) -> None:
        self.emit = emit
        self.show_reasoning = show_reasoning
        self.ended = False  # a done or error event arrived
        self.showing = False  # a status line is on screen
        self.last_id = ""  # the SSE id of the last complete frame: where the turn resumes
        self.usage_sent = False  # OpenWebUI adds up usage chunks: the turn's totals go out once

    async def say(self, description: str, done: bool = False, hidden: bool = False) -> None:
        self.showing = not hidden
        if self.emit is not None:
            await self.emit(status(description, done, hidden))

    async def read(
        self, client: httpx.AsyncClient, request: dict[str, Any], resume: bool = False
    ) -> AsyncIterator[Any]:
        """Yield what one connection of ``/chat/stream`` brings; return quietly if it drops mid-turn."""
        headers = {"Last-Event-ID": self.last_id} if resume else {}
        try:
            async with aconnect_sse(client, "POST", "/chat/stream", json=request, headers=headers) as source:
                if source.response.status_code != 200:
                    await source.response.aread()
                    raise ServiceError(refusal(source.response), source.response.status_code)
                async for sse in source.aiter_sse():
                    self.last_id = sse.id or self.last_id
                    if not sse.data:  # a keepalive comment (httpx-sse yields it as an empty event)
                        continue
                    try:
                        event = decode_event(sse.data)
                    except ProtocolError as exc:
                        log.warning("letta pipe: skipping a malformed event: %s", exc)
                        continue
                    if event is not None:
                        async for chunk in self._show(event):
                            yield chunk
                    if self.ended:
                        return
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            log.info("letta pipe: the stream dropped: %r", exc)

    async def _show(self, event: dict[str, Any]) -> AsyncIterator[Any]:
        kind = event["type"]
        if kind == "status":
            if event["content"] == THINKING and self.show_reasoning:
                # OpenWebUI's reasoning block says "Thinking…" itself: don't say it twice, just clear a stale line
                if self.showing:
                    await self.say("Thinking", done=True, hidden=True)
            else:
                await self.say(event["content"])
        elif kind == "reasoning":
            if self.show_reasoning:
                yield reasoning_chunk(event["content"])
        elif kind == "message":
            if self.showing:  # the answer is being written: "Thinking..."/"Using x..." is over
                await self.say("Writing", done=True, hidden=True)
            yield content_chunk(event["content"])
        elif kind == "error":
            self.ended = True
            yield content_chunk(friendly_error(f"The tutor ran into a problem: {event['message']}"))
            await self.say("Something went wrong", done=True)
        elif kind == "done":
            self.ended = True
            usage = usage_chunk(event.get("usage"))
            if usage is not None and not self.usage_sent:
                self.usage_sent = True
                yield usage
            await self.say("Done", done=True, hidden=True)


# -- the Function -----------------------------------------------------------------------


class Pipe:
    class Valves(BaseModel):
        SERVICE_URL: str = Field(default="http://127.0.0.1:8100", description="letta-stream service URL")
        SERVICE_TOKEN: str = Field(default="", description="Bearer token the service expects (if any)")
        AGENT_TYPE: str = Field(
            default="tutor", description="Fallback agent type (a model id naming none; the service down)"
        )
        ENABLE_THINKING: bool = Field(default=True, description="Ask the agent to reason before answering")
        CONNECT_TIMEOUT: float = Field(default=5.0, description="Seconds to reach the service")
        READ_TIMEOUT: float = Field(default=60.0, description="Seconds of silence before giving up (> keepalive)")

    class UserValves(BaseModel):
        SHOW_REASONING: bool = Field(default=True, description="Show the tutor's thinking")

    def __init__(self) -> None:
        self.valves = self.Valves()
        # a cache shared by every request (not per-request state): the last agent types the service listed
        self._types: list[dict[str, str]] = []
        self._types_key: tuple[str, str] = ("", "")  # (SERVICE_URL, SERVICE_TOKEN) it came from
        self._types_until = 0.0  # monotonic time until which the cached answer is reused

    async def pipes(self) -> list[dict[str, str]]:
        """The manifold's models: ``[{"id": type id, "name": display name}]``, one per agent type.

        Never raises (OpenWebUI would drop every model of this function): when the service
        can't answer, the last list it gave, else the ``AGENT_TYPE`` valve's type alone.
        """
        key = (self.valves.SERVICE_URL, self.valves.SERVICE_TOKEN)
        now = time.monotonic()
        if key == self._types_key and now < self._types_until:
            return [dict(t) for t in self._types] or [self._fallback_type()]
        try:
            types = await self._fetch_types()
        except (httpx.HTTPError, ServiceError, ValueError, KeyError, TypeError) as exc:
            log.warning("letta pipe: could not list the agent types: %r", exc)
            if key != self._types_key:
                self._types = []
            self._types_key, self._types_until = key, now + TYPES_RETRY
            return [dict(t) for t in self._types] or [self._fallback_type()]
        self._types, self._types_key, self._types_until = types, key, now + TYPES_TTL
        return [dict(t) for t in types]

    async def _fetch_types(self) -> list[dict[str, str]]:
        timeout = httpx.Timeout(5.0, connect=min(self.valves.CONNECT_TIMEOUT, 3.0))
        async with httpx.AsyncClient(base_url=self.valves.SERVICE_URL, timeout=timeout, headers=self._auth()) as client:
            response = await client.get("/agent-types")
        if response.status_code != 200:
            raise ServiceError(refusal(response), response.status_code)
        listed = response.json()["agent_types"]
        types = [{"id": str(t["id"]), "name": str(t.get("name") or t["id"])} for t in listed]
        if not types:
            raise ValueError("the service lists no agent types")
        return types

    def _fallback_type(self) -> dict[str, str]:
        type_id = self.valves.AGENT_TYPE
        return {"id": type_id, "name": "Letta " + type_id.replace("-", " ").replace("_", " ").title()}

    def agent_type_of(self, body: dict[str, Any]) -> str:
        """The agent type a chat is with: the part after ``<function id>.`` of its model id, else ``AGENT_TYPE``."""
        _, dot, sub_id = str(body.get("model") or "").partition(".")
        return sub_id if dot and sub_id else self.valves.AGENT_TYPE

    async def pipe(
        self,
        body: dict[str, Any],
        __user__: dict[str, Any] | None = None,
        __metadata__: dict[str, Any] | None = None,
        __event_emitter__: Emitter | None = None,
        __task__: str | None = None,
        __chat_id__: str | None = None,
        __files__: list[dict[str, Any]] | None = None,
    ) -> str | AsyncIterator[Any]:
        if __task__:
            return task_answer(str(getattr(__task__, "value", __task__)), body)
        user = __user__ or {}
        show = getattr(user.get("valves"), "SHOW_REASONING", True)
        files = unreadable_files(__files__)
        typed = ((__metadata__ or {}).get("user_message") or {}).get("content") if files else None
        ids = chat_ids(__metadata__, __chat_id__)
        return self._stream(body, user, ids, __event_emitter__, bool(show), files, typed)

    async def _stream(
        self,
        body: dict[str, Any],
        user: dict[str, Any],
        ids: dict[str, str | None],
        emit: Emitter | None,
        show_reasoning: bool,
        files: list[str] | None = None,
        typed: Any = None,
    ) -> AsyncIterator[Any]:
        """One turn.  ``files``: attached files the tutor cannot read (the student is told);
        ``typed``: the student's own text then (OpenWebUI may have put retrieved file text into the message)."""
        valves = self.valves
        turn = _Turn(emit, show_reasoning)
        agent_id: str | None = None
        messages = body.get("messages", [])
        message = typed if isinstance(typed, str) else last_user_text(messages)
        try:
            images = last_user_images(messages)
        except AttachmentError as exc:
            yield content_chunk(str(exc))
            return
        if files:
            yield content_chunk(files_notice(files))
        if not message.strip() and not images:
            yield "Please type a message for your tutor."
            return
        timeout = httpx.Timeout(valves.READ_TIMEOUT, connect=valves.CONNECT_TIMEOUT)
        try:
            async with httpx.AsyncClient(base_url=valves.SERVICE_URL, timeout=timeout, headers=self._auth()) as client:
                agent_id = await self._agent_for(client, user, self.agent_type_of(body))
                request = {
                    "agent_id": agent_id,
                    "message": message,
                    "user_id": user.get("id"),
                    **ids,
                    "enable_thinking": valves.ENABLE_THINKING,
                }
                if images:
                    request["images"] = images
                async for chunk in turn.read(client, request):
                    yield chunk
                resumes = 0
                while not turn.ended and turn.last_id and resumes < MAX_RESUMES:
                    # dropped mid-turn (a network blip, a replica restarting): the turn goes on, pick it up
                    resumes += 1
                    await asyncio.sleep(min(0.25 * resumes, 2.0))
                    log.info("letta pipe: resuming the turn from %s (attempt %d)", turn.last_id, resumes)
                    try:
                        async for chunk in turn.read(client, request, resume=True):
                            yield chunk
                    except (httpx.ConnectError, httpx.TimeoutException) as exc:
                        log.info("letta pipe: resume attempt failed: %r", exc)
                    except ServiceError as exc:
                        if exc.status != 503:  # 503: that replica is restarting; another will answer
                            raise
            if not turn.ended:
                turn.ended = True
                yield content_chunk(friendly_error("The connection to the tutor was interrupted. Please try again."))
                await turn.say("Interrupted", done=True)
        except (asyncio.CancelledError, GeneratorExit):
            # The stop button: OpenWebUI cancels the task reading us — inside our httpx read (CancelledError
            # here), or while it handles a chunk we yielded, and then closes us at that yield (GeneratorExit).
            # First a final, visible status, so the partial answer is marked as stopped rather than looking
            # finished (and no "Thinking..." stays); then stop the turn itself, not just our reading.  Both
            # shielded: we are being cancelled.
            if emit is not None and not turn.ended:
                await asyncio.shield(emit(status("Stopped", done=True)))
            if agent_id is not None and not turn.ended:
                await asyncio.shield(self._stop(agent_id, user.get("id")))
            raise
        except ServiceError as exc:
            yield content_chunk(friendly_error(exc.message))
            await turn.say("Something went wrong", done=True)
        except httpx.ConnectError:
            yield content_chunk(friendly_error("The tutor service can't be reached right now. Please try again soon."))
            await turn.say("Tutor unavailable", done=True)
        except httpx.TimeoutException:
            yield content_chunk(friendly_error("The tutor took too long to answer. Please try again."))
            await turn.say("Timed out", done=True)
        except httpx.HTTPError:
            log.exception("letta pipe: the connection to the service failed")
            yield content_chunk(friendly_error("The connection to the tutor failed. Please try again."))
            await turn.say("Connection failed", done=True)

    def _auth(self) -> dict[str, str]:
        token = self.valves.SERVICE_TOKEN
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _stop(self, agent_id: str, user_id: Any) -> None:
        """Ask the service to cancel the agent's turn now; never raises (the student already pressed stop)."""
        try:
            async with httpx.AsyncClient(base_url=self.valves.SERVICE_URL, timeout=3.0, headers=self._auth()) as client:
                await client.post("/chat/cancel", json={"agent_id": agent_id, "user_id": user_id})
        except httpx.HTTPError as exc:
            log.warning("letta pipe: could not ask the service to stop the turn: %r", exc)

    async def _agent_for(self, client: httpx.AsyncClient, user: dict[str, Any], agent_type: str) -> str:
        """Find or create the student's agent of that type through the service."""
        user_id = user.get("id")
        if not user_id:
            raise ServiceError("I couldn't tell who you are; please sign in again.")
        payload = {"user_id": user_id, "agent_type": agent_type, "user_name": user.get("name")}
        response = await client.post("/agents", json=payload)
        if response.status_code not in (200, 201):
            raise ServiceError(refusal(response))
        agent_id: str = response.json()["agent_id"]
        return agent_id
