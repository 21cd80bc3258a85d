"""The pipe against recorded service streams: exact chunks, statuses, and every edge a student may meet."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from devstack.service_thread import ServiceThread, free_port
from pipe.letta_pipe import MAX_RESUMES

from .harness import make_pipe, run_pipe
from .scripted_service import USAGE

pytestmark = pytest.mark.anyio


def status(description: str, done: bool = False, hidden: bool = False) -> dict[str, Any]:
    return {"type": "status", "data": {"description": description, "done": done, "hidden": hidden}}


async def test_happy_stream_yields_reasoning_and_content_and_emits_only_statuses(
    scripted: ServiceThread, calls: list[Any]
) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "happy")
    assert outcome.chunks == [
        {"choices": [{"delta": {"reasoning_content": "Let me "}}]},
        {"choices": [{"delta": {"reasoning_content": "think."}}]},
        {"choices": [{"delta": {"content": "Hello"}}]},
        {"choices": [{"delta": {"content": ", student"}}]},
        {"usage": USAGE},  # once, at the end: OpenWebUI shows it in the message's info
    ]
    assert outcome.statuses == [
        # no "Thinking..." line: OpenWebUI's own reasoning block says "Thinking…" right below it
        status("Using conversation_search..."),
        status("Writing", done=True, hidden=True),  # the answer starts: the status line goes away
        status("Done", done=True, hidden=True),
    ]
    assert [name for name, _ in calls] == ["agents", "stream"]
    agents_body, stream_body = calls[0][1], calls[1][1]
    assert agents_body == {"user_id": "student-1", "agent_type": "tutor", "user_name": "Ada"}
    assert stream_body["agent_id"] == "agent-student-1"
    assert stream_body["user_id"] == "student-1"
    assert stream_body["chat_id"] == "chat-1"


async def test_reasoning_hidden_when_the_student_turns_it_off(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "happy", show_reasoning=False)
    assert outcome.reasoning == ""
    assert outcome.content == "Hello, student"
    # no reasoning block on screen: the status line is what says the tutor is thinking
    assert outcome.descriptions[:2] == ["Thinking...", "Using conversation_search..."]


async def test_unknown_event_types_are_ignored(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "unknown")
    assert outcome.content == "ab"
    assert outcome.statuses[-1] == status("Done", done=True, hidden=True)


async def test_malformed_events_are_skipped_not_fatal(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "malformed")
    assert outcome.content == "a"
    assert outcome.statuses[-1] == status("Done", done=True, hidden=True)


async def test_abrupt_end_tells_the_student(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "abrupt")
    assert outcome.content.startswith("half an ans")
    assert "interrupted" in outcome.content
    assert outcome.statuses[-1]["data"]["done"] is True


async def test_error_event_keeps_partial_text_and_explains(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "error")
    assert outcome.content.startswith("Partial")
    assert "model exploded" in outcome.content
    assert outcome.statuses[-1] == status("Something went wrong", done=True)


@pytest.mark.parametrize(("scenario", "words"), [("refuse", "unavailable"), ("busy", "previous message")])
async def test_refusals_become_a_sentence(scripted: ServiceThread, calls: list[Any], scenario: str, words: str) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), scenario)
    assert words in outcome.content
    assert "Traceback" not in outcome.content


async def test_service_down_is_a_sentence_not_a_traceback() -> None:
    outcome = await run_pipe(make_pipe(f"http://127.0.0.1:{free_port()}"), "happy")
    assert "can't be reached" in outcome.content
    assert outcome.statuses[-1] == status("Tutor unavailable", done=True)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("title_generation", {"title": "How do I start my college essay?"}),
        ("tags_generation", {"tags": ["Tutoring"]}),
        ("follow_up_generation", {"follow_ups": []}),
    ],
)
async def test_background_tasks_never_reach_the_agent(
    scripted: ServiceThread, calls: list[Any], task: str, expected: dict[str, Any]
) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "How do I start my college essay?", task=task)
    assert outcome.returned is not None
    assert json.loads(outcome.returned) == expected
    assert calls == []


async def test_long_titles_are_shortened() -> None:
    outcome = await run_pipe(make_pipe("http://unused"), "word " * 40, task="title_generation")
    assert outcome.returned is not None
    assert len(json.loads(outcome.returned)["title"]) <= 51


async def test_one_pipe_instance_serves_concurrent_students(scripted: ServiceThread, calls: list[Any]) -> None:
    import anyio

    pipe = make_pipe(scripted.url)
    results: dict[str, str] = {}

    async def one(user: str) -> None:
        results[user] = (await run_pipe(pipe, "happy", user_id=user)).content

    async with anyio.create_task_group() as tg:
        for user in ("a", "b", "c"):
            tg.start_soon(one, user)
    assert results == {"a": "Hello, student", "b": "Hello, student", "c": "Hello, student"}
    assert sorted(body["agent_id"] for name, body in calls if name == "stream") == ["agent-a", "agent-b", "agent-c"]


async def test_api_calls_without_a_chat_send_no_chat_id(scripted: ServiceThread, calls: list[Any]) -> None:
    """OpenWebUI 0.12 passes chat_id "" for API clients; the service wants an id or null."""
    await run_pipe(make_pipe(scripted.url), "happy", chat_id="")
    assert calls[-1][1]["chat_id"] is None


async def test_the_message_ids_go_with_the_chat(scripted: ServiceThread, calls: list[Any]) -> None:
    """What the service needs to spot a regenerate (same user message id) or an edit (same parent)."""
    meta = {"user_message_id": "um-2", "message_id": "am-2", "user_message": {"id": "um-2", "parentId": "am-1"}}
    await run_pipe(make_pipe(scripted.url), "happy", metadata=meta)
    body = calls[-1][1]
    assert (body["chat_id"], body["user_message_id"], body["parent_message_id"]) == ("chat-1", "um-2", "am-1")
    await run_pipe(make_pipe(scripted.url), "happy", metadata={"user_message": {"id": "um-1", "parentId": None}})
    assert (calls[-1][1]["user_message_id"], calls[-1][1]["parent_message_id"]) == ("um-1", None)
    await run_pipe(make_pipe(scripted.url), "happy", chat_id="", metadata=meta)  # no chat: no ids either
    assert [calls[-1][1][k] for k in ("chat_id", "user_message_id", "parent_message_id")] == [None, None, None]


async def test_stop_marks_the_answer_as_stopped(scripted: ServiceThread, calls: list[Any]) -> None:
    """A stopped answer must not look finished: a final, visible "Stopped" replaces any working status."""
    outcome = await run_pipe(make_pipe(scripted.url), "slow", stop_after_chunks=1)
    assert len(outcome.chunks) == 1
    assert outcome.statuses[-1] == status("Stopped", done=True)
    assert outcome.usages == []


async def test_token_valve_is_sent_as_bearer(scripted: ServiceThread, calls: list[Any]) -> None:
    await run_pipe(make_pipe(scripted.url, SERVICE_TOKEN="t0k"), "happy")
    assert scripted.app.config["auth"][-1] == "Bearer t0k"


async def test_a_dropped_stream_is_resumed_once_from_the_last_id(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "drop")
    assert [name for name, _ in calls] == ["agents", "stream", "resume"]
    assert calls[2][1] == "turn-7:4"  # the id of the last complete frame, not of the cut one
    assert outcome.content == "Hello, student"
    assert outcome.reasoning == "Hmm."
    assert outcome.statuses[-1] == status("Done", done=True, hidden=True)
    assert outcome.usages == [USAGE]  # once for the turn, though it took two connections
    assert "usage" in outcome.chunks[-1]


async def test_a_stream_that_drops_again_after_resuming_is_reported(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "drop-twice")
    assert [name for name, _ in calls] == ["agents", "stream"] + ["resume"] * MAX_RESUMES
    assert [last_id for name, last_id in calls if name == "resume"] == ["turn-7:4"] + ["turn-7:5"] * (MAX_RESUMES - 1)
    assert outcome.content.startswith("Hello, student\n\n⚠️")  # what arrived stays, once; then it gives up
    assert "interrupted" in outcome.content


async def test_a_stream_without_positions_is_not_resumed(scripted: ServiceThread, calls: list[Any]) -> None:
    await run_pipe(make_pipe(scripted.url), "abrupt")
    assert [name for name, _ in calls] == ["agents", "stream"]


async def test_the_stop_button_asks_the_service_to_cancel_the_turn(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "stop-me", stop_after_chunks=2)
    assert outcome.statuses[-1] == status("Stopped", done=True)
    assert calls[-1] == ("cancel", {"agent_id": "agent-student-1", "user_id": "student-1"})


async def test_a_stop_that_lands_between_chunks_still_marks_the_answer_and_stops_the_turn(
    scripted: ServiceThread, calls: list[Any]
) -> None:
    """OpenWebUI's task may be cancelled while it handles a chunk: the pipe is then closed at its yield."""
    outcome = await run_pipe(make_pipe(scripted.url), "stop-me", stop_after_chunks=2, stop_between_chunks=True)
    assert len(outcome.chunks) == 2
    assert outcome.statuses[-1] == status("Stopped", done=True)
    assert calls[-1] == ("cancel", {"agent_id": "agent-student-1", "user_id": "student-1"})


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005ff02fea36b8a6c0000000049454e44ae426082"
)
PNG_B64 = base64.b64encode(PNG).decode()


def picture(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


async def test_pasted_pictures_are_sent_with_the_text(scripted: ServiceThread, calls: list[Any]) -> None:
    content = [
        {"type": "text", "text": "happy"},
        picture(f"data:image/png;base64,{PNG_B64}"),
        picture(f"data:image/JPEG;base64,{PNG_B64}"),
    ]
    outcome = await run_pipe(make_pipe(scripted.url), "", content=content)
    assert outcome.content == "Hello, student"
    [(_, body)] = [c for c in calls if c[0] == "stream"]
    assert body["message"] == "happy"
    assert body["images"] == [
        {"media_type": "image/png", "data": PNG_B64},
        {"media_type": "image/jpeg", "data": PNG_B64},
    ]


async def test_a_picture_alone_is_sent(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "", content=[picture(f"data:image/png;base64,{PNG_B64}")])
    assert outcome.content == "Hello, student"
    [(_, body)] = [c for c in calls if c[0] == "stream"]
    assert body["message"] == ""
    assert len(body["images"]) == 1


async def test_text_alone_sends_no_images_field(scripted: ServiceThread, calls: list[Any]) -> None:
    await run_pipe(make_pipe(scripted.url), "happy")
    assert "images" not in calls[-1][1]


@pytest.mark.parametrize(
    "url",
    ["data:image/png;base64,not*base64", "data:image/png,rawbytes", "https://example.com/cat.png", ""],
)
async def test_an_unreadable_picture_is_a_sentence_and_nothing_is_sent(
    scripted: ServiceThread, calls: list[Any], url: str
) -> None:
    content = [{"type": "text", "text": "happy"}, picture(f"data:image/png;base64,{PNG_B64}"), picture(url)]
    outcome = await run_pipe(make_pipe(scripted.url), "", content=content)
    assert "Picture 2 of your message could not be read" in outcome.content
    assert "nothing was sent" in outcome.content
    assert calls == []


async def test_attached_files_are_named_in_a_note_and_the_typed_text_is_sent(
    scripted: ServiceThread, calls: list[Any]
) -> None:
    files = [
        {"type": "file", "name": "essay-draft.pdf", "file": {"meta": {"content_type": "application/pdf"}}},
        {"type": "image", "url": "data:image/png;base64,xx"},  # pictures go as parts: not named
    ]
    # OpenWebUI may have put retrieved file text around the student's words in the message itself
    injected = "### Task: answer using <context>...essay text...</context> happy"
    metadata = {"user_message": {"content": "happy"}}
    outcome = await run_pipe(make_pipe(scripted.url), injected, files=files, metadata=metadata)
    assert outcome.content.startswith("📎 *Your tutor can't read attached files yet (essay-draft.pdf)")
    assert outcome.content.endswith("Hello, student")
    assert calls[-1][1]["message"] == "happy"


async def test_no_files_no_note(scripted: ServiceThread, calls: list[Any]) -> None:
    outcome = await run_pipe(make_pipe(scripted.url), "happy", files=[])
    assert outcome.content == "Hello, student"


@pytest.mark.parametrize(("status_code", "words"), [(413, "too large"), (400, "pictures can't be sent")])
async def test_refused_pictures_are_a_sentence(status_code: int, words: str) -> None:
    import httpx

    from pipe.letta_pipe import refusal

    body = {"error": "invalid_request", "field": "images[0].data", "message": "images[0].data: too big"}
    assert words in refusal(httpx.Response(status_code, json=body))
