"""One Letta conversation per OpenWebUI chat, found again through Letta itself.

Letta 0.16.8's conversations carry no metadata or tags; their ``summary`` (free text, never
written by Letta) holds ``openwebui-chat:<chat_id>`` on its first line (then the chat's title).
``conversations.list(agent_id=, summary_search=)`` is a substring search, so the first line is
compared exactly.  The in-memory index is only a cache of what Letta says.  Creation holds a
lock per (agent, chat) in the turn store — Redis when replicas share one — so two workers
racing on a chat's first message create one conversation; were two ever made, the oldest wins.

A turn's user message carries OpenWebUI's ids as its Letta ``otid``
(``owui:<user_message_id>:<parent_message_id or "root">``, see :func:`message_otid`).  From the
conversation's recent user messages, :meth:`ConversationIndex.history_of` tells a *regenerate*
(the same user message id again) and an *edit* (a new user message with the parent of an
earlier one) from a new message, and the agent is told what happened (:func:`agent_input`):
Letta 0.16.8 cannot fork a conversation at a message, so the history is not rewound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
from letta_client import AsyncLetta, NotFoundError
from letta_client.types.agents import LettaResponse

from pipeline.content import Image
from pipeline.letta_turn import user_input

from .agents import CREATE_LOCK_SECONDS, Lock
from .errors import UpstreamUnavailable
from .store import LockTimeout
from .store.memory import MemoryStore
from .upstream import letta_errors

CHAT_MARK: Final = "openwebui-chat:"
RECENT_MESSAGES: Final = 50
"""How far back a regenerate is looked for (OpenWebUI regenerates a recent answer)."""

OTID_MARK: Final = "owui:"
ROOT: Final = "root"
EDIT_QUOTE_CHARS: Final = 200
TITLE_CHARS: Final = 200
NOTE_START: Final = "(The student "
NOTE_END: Final = ")\n\n"


def message_otid(user_message_id: str, parent_message_id: str | None) -> str:
    """The ``otid`` a user message is sent with: OpenWebUI's id and its parent's."""
    return f"{OTID_MARK}{user_message_id}:{parent_message_id or ROOT}"


def otid_ids(otid: str | None) -> tuple[str, str] | None:
    """``(user_message_id, parent_message_id or "root")`` from one of our otids."""
    if not otid or not otid.startswith(OTID_MARK):
        return None
    user, sep, parent = otid.removeprefix(OTID_MARK).rpartition(":")
    return (user, parent) if sep and user else None


@attrs.frozen
class Earlier:
    """What the conversation already holds of this OpenWebUI message: ``kind`` is ``regenerate`` or ``edit``."""

    kind: str
    text: str
    """The earlier message's text (for an edit: the version the student replaced)."""


def agent_input(message: str, earlier: Earlier | None) -> str:
    """What the agent is sent: the message, with a note when the student regenerates or edits."""
    if earlier is None:
        return message
    if earlier.kind == "regenerate":
        return (
            "(The student asked you to answer this message again: they saw your previous answer to it "
            "and want a new one.)\n\n" + message
        )
    old = " ".join(earlier.text.split())
    old = old[:EDIT_QUOTE_CHARS] + ("…" if len(old) > EDIT_QUOTE_CHARS else "")
    return (
        f'(The student went back and edited an earlier message, which read: "{old}". Your answers after '
        "that message no longer count; this is the new version.)\n\n" + message
    )


def chat_summary(chat_id: str, title: str | None) -> str:
    """The ``summary`` a chat's conversation is created with."""
    first = CHAT_MARK + chat_id
    title = " ".join((title or "").split())[:TITLE_CHARS]
    return f"{first}\n{title}" if title else first


def chat_of(summary: str | None) -> str | None:
    """The chat id a conversation's ``summary`` names, if it is one of ours."""
    if not summary:
        return None
    first = summary.split("\n", 1)[0]
    return first.removeprefix(CHAT_MARK) if first.startswith(CHAT_MARK) else None


@attrs.define
class ConversationIndex:
    """Finds or creates the conversation of (agent, OpenWebUI chat)."""

    client: AsyncLetta
    lock: Lock = attrs.Factory(lambda: MemoryStore().lock)
    _by_chat: dict[tuple[str, str], str] = attrs.field(factory=dict, init=False)

    async def for_chat(self, agent_id: str, chat_id: str, title: str | None = None) -> tuple[str, bool]:
        """The chat's conversation id, and whether it was created now."""
        key = (agent_id, chat_id)
        found = self._by_chat.get(key) or await self._find(agent_id, chat_id)
        if found is not None:
            return found, False
        try:
            async with self.lock(
                f"conversation:{agent_id}:{chat_id}", ttl=CREATE_LOCK_SECONDS, wait=CREATE_LOCK_SECONDS
            ):
                found = await self._find(agent_id, chat_id)  # another worker may have created it meanwhile
                if found is not None:
                    return found, False
                created = await self.client.conversations.create(
                    agent_id=agent_id, summary=chat_summary(chat_id, title)
                )
        except LockTimeout as exc:
            raise UpstreamUnavailable("this chat's conversation is still being created; try again") from exc
        self._by_chat[key] = created.id
        return created.id, True

    def forget(self, agent_id: str, chat_id: str) -> None:
        """Drop a conversation Letta no longer has from the index."""
        self._by_chat.pop((agent_id, chat_id), None)

    @asynccontextmanager
    async def forgetting_missing(self, agent_id: str, chat_id: str | None) -> AsyncIterator[None]:
        """A 404 from Letta inside the block (e.g. the conversation was deleted) drops the chat from the index,
        so the next message finds or creates the conversation again; the error goes on."""
        try:
            yield
        except NotFoundError:
            if chat_id is not None:
                self.forget(agent_id, chat_id)
            raise

    async def _find(self, agent_id: str, chat_id: str) -> str | None:
        found = await self.client.conversations.list(
            agent_id=agent_id, summary_search=CHAT_MARK + chat_id, order="asc", order_by="created_at", limit=50
        )
        ours = [c for c in found if chat_of(c.summary) == chat_id]
        if not ours:
            return None
        self._by_chat[(agent_id, chat_id)] = ours[0].id
        return str(ours[0].id)

    async def history_of(
        self, conversation_id: str, user_message_id: str, parent_message_id: str | None
    ) -> Earlier | None:
        """Whether this OpenWebUI message was sent before (regenerate) or replaces an earlier one (edit).

        Reads one page of the conversation's recent user messages (awaited, not iterated:
        letta-client's paginator repeats messages when ``order="desc"``).
        """
        page: Any = await self.client.conversations.messages.list(
            conversation_id, order="desc", limit=RECENT_MESSAGES, include_return_message_types=["user_message"]
        )
        parent = parent_message_id or ROOT
        edited: Earlier | None = None
        for message in page.items:  # newest first
            ids = otid_ids(getattr(message, "otid", None))
            if ids is None:
                continue
            text = _without_note(_text(getattr(message, "content", "")))
            if ids[0] == user_message_id:
                return Earlier("regenerate", text)
            if ids[1] == parent and edited is None:
                edited = Earlier("edit", text)
        return edited


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(getattr(p, "text", "")) for p in content)
    return ""


def _without_note(text: str) -> str:
    """The student's text of a message we sent with a note before it."""
    if text.startswith(NOTE_START):
        _, sep, rest = text.partition(NOTE_END)
        return rest if sep else text
    return text


@attrs.frozen
class Target:
    """Where a user message goes and what the agent is sent."""

    conversation_id: str | None
    """``None``: the agent's default history (no chat id given)."""
    text: str
    otid: str | None = None
    images: tuple[Image, ...] = ()
    """Pictures pasted with the message (checked already), sent after its text."""


async def target(
    index: ConversationIndex,
    agent_id: str,
    message: str,
    chat_id: str | None,
    *,
    chat_title: str | None = None,
    user_message_id: str | None = None,
    parent_message_id: str | None = None,
    images: Sequence[Image] = (),
) -> Target:
    """The chat's conversation (created on its first message) and the text for the agent.

    No ``chat_id``: the agent's default history, the message as it is.  With one, a regenerate
    or an edit (``user_message_id`` / ``parent_message_id``) is told to the agent (:func:`agent_input`).
    Letta's failures are raised as the service's errors (404/502/503).
    """
    if chat_id is None:
        return Target(None, message, images=tuple(images))
    earlier = None
    async with letta_errors("conversation"):
        conversation_id, created = await index.for_chat(agent_id, chat_id, chat_title)
        if user_message_id is not None and not created:
            earlier = await index.history_of(conversation_id, user_message_id, parent_message_id)
    otid = message_otid(user_message_id, parent_message_id) if user_message_id else None
    return Target(conversation_id, agent_input(message, earlier), otid, tuple(images))


async def whole_turn(client: AsyncLetta, agent_id: str, where: Target) -> Any:
    """One turn, not streamed: Letta's ``LettaResponse``."""
    if where.conversation_id is None:
        return await client.agents.messages.create(agent_id, **user_input(where.text, where.otid, where.images))
    # letta-client types conversations.messages.create as a stream; streaming=false answers a LettaResponse
    return await client.post(
        f"/v1/conversations/{where.conversation_id}/messages",
        cast_to=LettaResponse,
        body={**user_input(where.text, where.otid, where.images), "streaming": False},
    )
