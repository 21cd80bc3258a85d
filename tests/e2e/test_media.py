"""Pictures, usage and the stop marker in a real OpenWebUI 0.12.4 (Chromium), through the real pipe and Letta.

A picture pasted into the chat input (a ``paste`` ClipboardEvent carrying the file, as a pasted
screenshot) must reach the scripted model behind Letta byte for byte; the turn's usage must be
stored with the message (what its info tooltip shows); the pipe's status line must not say
"Thinking..." above OpenWebUI's own "Thinking…" block; and a stopped answer must say so.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.stack import LocalStack
from tests.scripted_llm import expected_answer, received_images

from .conftest import Admin, RunChat

pytestmark = pytest.mark.e2e

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005ff02fea36b8a6c0000000049454e44ae426082"
)


def stored_message(admin: Admin, report: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as OpenWebUI stored it (its ``usage`` is what the info tooltip shows)."""
    chat_id = str(report["chatUrl"]).rstrip("/").rsplit("/c/", 1)[1]
    resp = httpx.get(
        f"{admin.url}/api/v1/chats/{chat_id}", headers={"Authorization": f"Bearer {admin.token}"}, timeout=30
    )
    resp.raise_for_status()
    messages: dict[str, Any] = resp.json()["chat"]["history"]["messages"]
    message_id = str(report["final"]["messageId"]).removeprefix("message-")
    found: dict[str, Any] = messages[message_id]
    return found


def test_a_pasted_picture_reaches_the_model_and_usage_is_stored(
    admin: Admin, letta_pipe: str, letta_stack: LocalStack, run_chat: RunChat, artifacts_dir: Path
) -> None:
    marker = f"screenshot-{uuid.uuid4().hex[:8]}"
    prompt = f"[think] [long 9] [slow 60] What does my screenshot show? {marker}"
    image = {"name": "screenshot.png", "type": "image/png", "base64": base64.b64encode(PNG).decode()}

    report = run_chat(letta_pipe, prompt, extra={"images": [image], "traceText": True, "traceIntervalMs": 50})
    (artifacts_dir / "report.json").write_text(json.dumps(report, indent=2))

    assert report.get("pastedPreviews", 0) >= 1, report
    assert report["final"]["text"] == expected_answer(prompt)
    # What the model behind Letta received: the text and the picture, the same bytes.
    got = received_images(letta_stack.logs_dir / "llm-requests.jsonl", marker)
    assert got, "no model request carried the message"
    assert [base64.b64decode(url.split(",", 1)[1]) for url in got[0]] == [PNG], [u[:60] for u in got[0]]
    # The usage Letta reported, once: the scripted model counts 100 prompt tokens and one per answer word.
    usage = stored_message(admin, report).get("usage") or {}
    assert usage.get("prompt_tokens") == 100, usage
    assert usage.get("completion_tokens") == 9, usage
    assert usage.get("total_tokens") == 109, usage
    # Reasoning is shown natively: OpenWebUI's block says "Thinking…", the status line never says it too.
    trace = report["textTrace"]
    assert any(r.startswith("Thought for") for r in report["reasoningTexts"]), report["reasoningTexts"]
    assert trace["thinkingStatusMs"] == 0, trace["statusLines"]
    assert "Thinking..." not in report["statusTexts"], report["statusTexts"]


def test_a_stopped_answer_is_marked_stopped(letta_pipe: str, run_chat: RunChat, artifacts_dir: Path) -> None:
    prompt = "[long 400] [slow 40] Tell me everything about paragraphs"
    report = run_chat(letta_pipe, prompt, stop_after_ms=3000)
    (artifacts_dir / "report.json").write_text(json.dumps(report, indent=2))

    assert report["stopped"], report["samples"]
    assert 0 < len(report["final"]["text"]) < len(expected_answer(prompt))
    assert report["final"]["status"] == "Stopped", report["final"]
    assert report["reload"]["status"] == "Stopped", report["reload"]
