"""One OpenWebUI chat = one Letta conversation: the mapping, its creation race, regenerate/edit, bad input."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from quart import Quart

from app.conversations import ConversationIndex, agent_input, chat_of, chat_summary, message_otid, otid_ids
from app.store.memory import MemoryStore
from pipeline.events import Done, Text
from pipeline.sse import decode_events

from .fake_letta import make_fake

pytestmark = pytest.mark.anyio


async def _agent(app: Quart, user_id: str) -> str:
    response = await app.test_client().post("/agents", json={"user_id": user_id})
    agent_id: str = (await response.get_json())["agent_id"]
    return agent_id


async def _stream(app: Quart, **body: Any) -> list[Any]:
    response = await app.test_client().post("/chat/stream", json=body)
    assert response.status_code == 200, await response.get_data()
    events = list(decode_events([await response.get_data()]))
    assert isinstance(events[-1], Done)
    return events


def test_summary_names_the_chat_exactly() -> None:
    assert chat_of(chat_summary("c1", "Fractions")) == "c1"
    assert chat_of(chat_summary("c1", None)) == "c1"
    assert chat_of("openwebui-chat:c10") != "c1"  # Letta's summary_search is a substring match
    assert chat_of("a summary someone else wrote") is None
    assert otid_ids(message_otid("u:1", None)) == ("u:1", "root")
    assert otid_ids(message_otid("u1", "a7")) == ("u1", "a7")
    assert otid_ids("3f2c-uuid-letta-made") is None


async def test_two_chats_are_two_conversations_and_no_chat_is_the_default(app: Quart, letta: Any) -> None:
    agent_id = await _agent(app, "s1")
    await _stream(app, agent_id=agent_id, message="in A", chat_id="chat-A", chat_title="Algebra")
    await _stream(app, agent_id=agent_id, message="in B", chat_id="chat-B")
    await _stream(app, agent_id=agent_id, message="again A", chat_id="chat-A")
    await _stream(app, agent_id=agent_id, message="no chat")
    sent = letta.conversations.messages.sent
    conv_a, conv_b = sent[0][0], sent[1][0]
    assert conv_a != conv_b
    assert sent[2][0] == conv_a
    assert [text for _, text, _ in sent] == ["in A", "in B", "again A"]  # "no chat" went to the agent directly
    assert letta.agents.messages.sent[-1] == (agent_id, "no chat")
    store = letta.store.conversations
    assert {store[conv_a].agent_id, store[conv_b].agent_id} == {agent_id}
    assert store[conv_a].summary == "openwebui-chat:chat-A\nAlgebra"
    assert letta.conversations.created == 2


async def test_whole_reply_goes_to_the_chats_conversation(app: Quart, letta: Any) -> None:
    agent_id = await _agent(app, "s2")
    body = {"agent_id": agent_id, "message": "whole", "chat_id": "chat-W", "user_message_id": "m1"}
    response = await app.test_client().post("/chat", json=body)
    assert response.status_code == 200
    assert (await response.get_json())["response"] == "Hello student"
    [(conversation_id, text, otid)] = letta.conversations.messages.sent
    assert letta.store.conversations[conversation_id].summary == "openwebui-chat:chat-W"
    assert (text, otid) == ("whole", "owui:m1:root")


async def test_a_restarted_service_finds_the_chats_conversation_in_letta(letta: Any) -> None:
    index = ConversationIndex(letta)
    agent = await letta.agents.create(name="a", tags=[])
    first, created = await index.for_chat(agent.id, "chat-R")
    again, created_again = await ConversationIndex(letta).for_chat(agent.id, "chat-R")  # a new process: empty cache
    assert created
    assert not created_again
    assert again == first
    assert (await ConversationIndex(letta).for_chat(agent.id, "chat-R2"))[0] != first  # "chat-R" ⊂ "chat-R2"


async def test_racing_first_messages_of_a_chat_make_one_conversation(letta: Any) -> None:
    store = MemoryStore()  # one store = the shared Redis of two workers; two indexes = two workers' caches
    workers = [ConversationIndex(letta, lock=store.lock), ConversationIndex(letta, lock=store.lock)]
    agent = await letta.agents.create(name="a", tags=[])
    letta.conversations.list_delay = 0.01  # both look before either creates
    found: list[str] = []

    async def first_message(index: ConversationIndex) -> None:
        found.append((await index.for_chat(agent.id, "chat-race"))[0])

    async with anyio.create_task_group() as tg:
        for index in workers * 3:
            tg.start_soon(first_message, index)
    assert len(set(found)) == 1
    assert letta.conversations.created == 1


async def test_regenerate_and_edit_are_told_to_the_agent(app: Quart, letta: Any) -> None:
    agent_id = await _agent(app, "s3")
    turn = {"agent_id": agent_id, "chat_id": "chat-G"}
    await _stream(app, **turn, message="What is 2+2?", user_message_id="u1")
    await _stream(app, **turn, message="And 3+3?", user_message_id="u2", parent_message_id="a1")
    await _stream(app, **turn, message="And 3+3?", user_message_id="u2", parent_message_id="a1")  # regenerate
    await _stream(app, **turn, message="And 4+4?", user_message_id="u3", parent_message_id="a1")  # edit of u2
    await _stream(app, **turn, message="Thanks", user_message_id="u4", parent_message_id="a9")  # a new message
    sent = [text for _, text, _ in letta.conversations.messages.sent]
    assert sent[0] == "What is 2+2?"
    assert sent[1] == "And 3+3?"
    assert sent[4] == "Thanks"
    assert sent[2] == agent_input("And 3+3?", _earlier("regenerate", "And 3+3?"))
    assert "asked you to answer this message again" in sent[2]
    assert sent[3].endswith("And 4+4?")
    assert 'which read: "And 3+3?"' in sent[3]
    assert [otid for _, _, otid in letta.conversations.messages.sent][3] == "owui:u3:a1"


def _earlier(kind: str, text: str) -> Any:
    from app.conversations import Earlier

    return Earlier(kind, text)


@pytest.mark.parametrize("field", ["chat_id", "user_message_id", "parent_message_id"])
@pytest.mark.parametrize("value", ["", "   ", "x" * 300, 5])
async def test_bad_ids_are_a_400_naming_the_field(app: Quart, letta: Any, field: str, value: Any) -> None:
    agent_id = await _agent(app, "s4")
    for path in ("/chat", "/chat/stream"):
        response = await app.test_client().post(path, json={"agent_id": agent_id, "message": "hi", field: value})
        assert response.status_code == 400, (path, field, value)
        body = await response.get_json()
        assert (body["error"], body["field"]) == ("invalid_request", field)
    assert letta.conversations.messages.sent == []
    assert letta.agents.messages.sent == []


async def test_text_of_the_turn_is_unchanged_inside_a_conversation(app: Quart) -> None:
    agent_id = await _agent(app, "s5")
    events = await _stream(app, agent_id=agent_id, message="hi", chat_id="chat-T")
    assert "".join(e.content for e in events if isinstance(e, Text)) == "Hello student"


@pytest.fixture
def letta() -> Any:
    return make_fake()


async def test_a_conversation_deleted_in_letta_is_made_again_on_the_next_message(app: Quart, letta: Any) -> None:
    agent_id = await _agent(app, "s6")
    body = {"agent_id": agent_id, "message": "hi", "chat_id": "chat-D"}
    await _stream(app, **body)
    [old] = list(letta.store.conversations)
    del letta.store.conversations[old]  # deleted in Letta behind the service's back
    response = await app.test_client().post("/chat/stream", json=body)
    assert response.status_code == 404  # this message is refused before anything streamed...
    await _stream(app, **body)  # ... and the next one gets a new conversation
    [new] = list(letta.store.conversations)
    assert new != old
    assert letta.conversations.messages.sent[-1][0] == new


def test_a_long_title_is_kept_short_in_the_summary() -> None:
    assert (
        chat_summary("c", "  A  title\nwith lines " + "x" * 500) == "openwebui-chat:c\nA title with lines " + "x" * 181
    )
