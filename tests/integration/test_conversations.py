"""One OpenWebUI chat = one Letta conversation, against the real Letta 0.16.8 (no Redis in Letta).

What the model received is read from the scripted LLM's request log (``llm-requests.jsonl``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import httpx
import pytest
from letta_client import AsyncLetta

from devstack.stack import LocalStack
from pipeline.events import Done
from tests.conftest import SERVICE_TOKEN
from tests.scripted_llm import DEFAULT_ANSWER, expected_answer

from .service_api import new_agent
from .test_resume import read, text

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def unique(word: str) -> str:
    return f"{word}-{uuid.uuid4().hex[:8]}"


async def new_student(http: httpx.AsyncClient, name: str = "Ada") -> str:
    """A new student's agent (a fresh user id each time)."""
    return await new_agent(http, unique("conv-student"), user_name=name)


def model_requests(letta_stack: LocalStack, marker: str) -> list[str]:
    """The model requests (as JSON text) whose last user message contains ``marker``."""
    found = []
    for line in (letta_stack.logs_dir / "llm-requests.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["kind"] != "chat":
            continue
        users = [m for m in entry["body"].get("messages", []) if m.get("role") == "user"]
        if users and marker in json.dumps(users[-1]):
            found.append(json.dumps(entry["body"]))
    return found


async def conversations_of(letta_stack: LocalStack, agent_id: str) -> list[Any]:
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        return list(await letta.conversations.list(agent_id=agent_id, limit=100))


async def runs_of(letta_stack: LocalStack, agent_id: str) -> list[Any]:
    """The agent's runs, once each (letta-client's paginator may repeat them)."""
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        return list({r.id: r async for r in letta.runs.list(agent_id=agent_id)}.values())


async def test_two_chats_are_two_conversations_that_share_memory_but_not_messages(
    http: httpx.AsyncClient, letta_stack: LocalStack
) -> None:
    agent_id = await new_student(http, "Grace Hopper")
    alpha, beta, plain = unique("alpha"), unique("beta"), unique("plain")
    for message, chat in ((alpha, "chat-A"), (beta, "chat-B"), (plain, None)):
        events, _ = await read(http, {"agent_id": agent_id, "message": message, "chat_id": chat})
        assert text(events) == DEFAULT_ANSWER, events
        assert isinstance(events[-1], Done)
    again = unique("again")
    whole = await http.post("/chat", json={"agent_id": agent_id, "message": again, "chat_id": "chat-A"})
    assert whole.status_code == 200, whole.text
    assert whole.json()["response"] == DEFAULT_ANSWER

    conversations = await conversations_of(letta_stack, agent_id)
    assert sorted(c.summary for c in conversations) == ["openwebui-chat:chat-A", "openwebui-chat:chat-B"]
    [to_b] = model_requests(letta_stack, beta)
    assert alpha not in to_b  # chat B does not see chat A
    assert "Grace Hopper" in to_b  # ... but the same memory blocks
    [to_a] = model_requests(letta_stack, alpha)
    assert "Grace Hopper" in to_a
    [to_default] = model_requests(letta_stack, plain)
    assert alpha not in to_default  # no chat id: the agent's own history, as before
    assert beta not in to_default
    [to_a_again] = model_requests(letta_stack, again)  # the whole reply (/chat) went on in chat A
    assert alpha in to_a_again
    assert beta not in to_a_again
    assert plain not in to_a_again
    by_conversation = {c.summary: c.id for c in conversations}
    streamed = sorted(str(r.conversation_id) for r in await runs_of(letta_stack, agent_id))
    # Letta 0.16.8 records no conversation on a non-streamed conversation run (its messages are in it, above)
    assert streamed == sorted(
        [by_conversation["openwebui-chat:chat-A"], by_conversation["openwebui-chat:chat-B"], "None", "None"]
    )


async def test_a_dropped_stream_resumes_inside_its_conversation(
    http: httpx.AsyncClient, letta_stack: LocalStack
) -> None:
    agent_id = await new_student(http)
    prompt = "[long 150] [slow 20] a long story " + unique("resume")
    body = {"agent_id": agent_id, "message": prompt, "chat_id": "chat-R", "user_message_id": "u-r1"}
    first, last_id = await read(http, body, stop_at_chars=40)
    second, _ = await read(http, body, last_id=last_id)
    assert text(first) + text(second) == expected_answer(prompt)
    assert isinstance(second[-1], Done)
    [conversation] = await conversations_of(letta_stack, agent_id)
    [run] = await runs_of(letta_stack, agent_id)  # one turn: the message was not sent again
    assert run.conversation_id == conversation.id


async def test_cancel_stops_the_conversations_run(http: httpx.AsyncClient, letta_stack: LocalStack) -> None:
    agent_id = await new_student(http)
    body = {"agent_id": agent_id, "message": "[long 400] [slow 30] go", "chat_id": "chat-C"}
    events: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def reading() -> None:
            events.extend((await read(http, body))[0])

        tg.start_soon(reading)
        for _ in range(100):
            if await runs_of(letta_stack, agent_id):
                break
            await anyio.sleep(0.1)
        await anyio.sleep(0.5)
        stop = await http.post("/chat/cancel", json={"agent_id": agent_id})
        assert stop.status_code == 202
    [run] = await runs_of(letta_stack, agent_id)
    [conversation] = await conversations_of(letta_stack, agent_id)
    assert run.conversation_id == conversation.id
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        for _ in range(50):
            if (await letta.runs.retrieve(run.id)).status == "cancelled":
                break
            await anyio.sleep(0.1)
        assert (await letta.runs.retrieve(run.id)).status == "cancelled"
    assert len(text(events)) < len(expected_answer(body["message"]))
    again = await http.post("/chat", json={"agent_id": agent_id, "message": "still there?", "chat_id": "chat-C"})
    assert again.status_code == 200, again.text  # the agent is free again


async def test_regenerate_and_edit_are_told_to_the_agent(http: httpx.AsyncClient, letta_stack: LocalStack) -> None:
    agent_id = await new_student(http)
    question, edited, follow = unique("question"), unique("edited"), unique("follow")
    turn = {"agent_id": agent_id, "chat_id": "chat-G"}
    for body in (
        {**turn, "message": question, "user_message_id": "u1"},
        {**turn, "message": question, "user_message_id": "u1"},  # regenerate: same user message id
        {**turn, "message": edited, "user_message_id": "u2"},  # edit of u1: a new id with u1's parent (none)
        {**turn, "message": follow, "user_message_id": "u3", "parent_message_id": "a-last"},
    ):
        events, _ = await read(http, body)
        assert isinstance(events[-1], Done)

    first, regenerated = model_requests(letta_stack, question)[:2]
    assert "asked you to answer this message again" not in first
    assert "asked you to answer this message again" in regenerated
    [edit] = model_requests(letta_stack, edited)
    assert f'edited an earlier message, which read: \\"{question}\\"' in edit
    [plain] = model_requests(letta_stack, follow)
    assert "(The student" not in json.loads(plain)["messages"][-1]["content"]
    async with AsyncLetta(base_url=letta_stack.letta_url) as letta:
        [conversation] = await letta.conversations.list(agent_id=agent_id)
        page: Any = await letta.conversations.messages.list(
            conversation.id, order="asc", limit=50, include_return_message_types=["user_message"]
        )
    assert [m.otid for m in page.items] == ["owui:u1:root", "owui:u1:root", "owui:u2:root", "owui:u3:a-last"]


async def test_the_openai_endpoint_maps_the_chat_header_to_a_conversation(
    service: Any, letta_stack: LocalStack
) -> None:
    user = unique("oai-conv")
    headers = {
        "Authorization": f"Bearer {SERVICE_TOKEN}",
        "X-OpenWebUI-User-Id": user,
        "X-OpenWebUI-Chat-Id": "chat-O",
    }
    first, second, elsewhere = unique("oai-first"), unique("oai-second"), unique("oai-elsewhere")
    async with httpx.AsyncClient(base_url=service.url, timeout=60, headers=headers) as client:
        for marker, chat in ((first, "chat-O"), (second, "chat-O"), (elsewhere, None)):
            body = {"model": "tutor", "messages": [{"role": "user", "content": marker}], "stream": chat is not None}
            extra = {} if chat else {"X-OpenWebUI-Chat-Id": ""}  # blank: no chat
            response = await client.post("/v1/chat/completions", json=body, headers=extra)
            assert response.status_code == 200, response.text
        agents = await client.get("/agents", params={"user_id": user})
    agent_id = agents.json()["agents"][0]["agent_id"]
    [conversation] = await conversations_of(letta_stack, agent_id)
    assert conversation.summary == "openwebui-chat:chat-O"
    [to_second] = model_requests(letta_stack, second)
    assert first in to_second  # the same chat: its conversation goes on
    [to_elsewhere] = model_requests(letta_stack, elsewhere)
    assert first not in to_elsewhere  # no chat: the agent's default history
    streamed = [r for r in await runs_of(letta_stack, agent_id) if r.conversation_id is not None]
    assert [r.conversation_id for r in streamed] == [conversation.id] * 2
