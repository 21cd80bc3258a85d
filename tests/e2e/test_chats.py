"""Each new chat in OpenWebUI is its own Letta conversation with the student's one agent (issue 13).

Two chats opened in the browser, one after the other: each turn runs in the conversation named after its
own OpenWebUI chat id, both on the same agent, and the model behind Letta, answering in the second chat,
never sees the first chat's message.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from letta_client import AsyncLetta

from devstack.stack import LocalStack
from tests.scripted_llm import expected_answer, message_text

from .conftest import Admin, RunChat
from .test_letta_pipe import _user_id, wait_for_settled_runs

pytestmark = pytest.mark.e2e


async def _where_async(letta_url: str, run_id: str) -> tuple[str, str | None, str | None]:
    """``(agent id, conversation id, conversation summary)`` of a run."""
    async with AsyncLetta(base_url=letta_url, timeout=30) as letta:
        run = await letta.runs.retrieve(run_id)
        if run.conversation_id is None:
            return str(run.agent_id), None, None
        conversation = await letta.conversations.retrieve(run.conversation_id)
        return str(run.agent_id), run.conversation_id, conversation.summary


def _model_saw(request_log: Path, marker: str) -> list[list[str]]:
    """For each model request whose last user message carries ``marker``: the texts of all its messages."""
    found = []
    for line in request_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") != "chat":
            continue
        messages = entry["body"].get("messages", [])
        users = [m for m in messages if m.get("role") == "user"]
        if users and marker in message_text(users[-1]):
            found.append([message_text(m) for m in messages])
    return found


def _chat_id(report: dict[str, Any]) -> str:
    return str(report["chatUrl"]).rstrip("/").rsplit("/c/", 1)[1]


def test_each_new_chat_is_its_own_conversation(
    admin: Admin, letta_pipe: str, letta_stack: LocalStack, run_chat: RunChat, artifacts_dir: Path
) -> None:
    user_id = _user_id(admin)
    first, second = (f"chat-marker-{uuid.uuid4().hex[:8]}" for _ in range(2))
    places = []
    for marker in (first, second):
        before = wait_for_settled_runs(letta_stack, user_id)
        prompt = f"[long 6] Let's talk about {marker}"
        report = run_chat(letta_pipe, prompt)  # a new chat each time
        (artifacts_dir / f"report-{marker}.json").write_text(json.dumps(report, indent=2))
        assert report["final"]["text"] == expected_answer(prompt)
        after = wait_for_settled_runs(letta_stack, user_id)
        new = [run for run in after if run not in before]
        assert len(new) == 1, (before, after)
        agent_id, conversation_id, summary = asyncio.run(_where_async(letta_stack.letta_url, new[0]))
        places.append((agent_id, conversation_id, summary, _chat_id(report)))

    (agent_a, conv_a, summary_a, chat_a), (agent_b, conv_b, summary_b, chat_b) = places
    assert agent_a == agent_b, "one agent per student, whatever the chat"
    assert chat_a != chat_b
    assert conv_a is not None, places
    assert conv_b is not None, places
    assert conv_a != conv_b, places
    assert (summary_a or "").splitlines()[0] == f"openwebui-chat:{chat_a}", summary_a
    assert (summary_b or "").splitlines()[0] == f"openwebui-chat:{chat_b}", summary_b
    # The model, answering in the second chat, was not shown the first chat's message.
    seen = _model_saw(letta_stack.logs_dir / "llm-requests.jsonl", second)
    assert seen, "no model request carried the second chat's message"
    assert all(first not in text for request in seen for text in request), seen
    # ... while in the first chat it was (the check above can tell).
    assert any(
        first in text for request in _model_saw(letta_stack.logs_dir / "llm-requests.jsonl", first) for text in request
    )
