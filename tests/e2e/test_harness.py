"""Prove the e2e harness with a throwaway pipe: OpenWebUI API, live streaming in Chromium, reload, stop."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from devstack import openwebui as owui

from .conftest import FAKE_PIPE_ID, Admin, RunChat

pytestmark = pytest.mark.e2e


def _streaming_lengths(report: dict[str, Any]) -> list[int]:
    """Text lengths sampled while the answer was still streaming (non-empty, not yet done)."""
    return [s["textLength"] for s in report["samples"] if s["textLength"] > 0 and not s["done"] and s["stopVisible"]]


def test_api_stream(admin: Admin, fake_pipe: ModuleType) -> None:
    owui.set_valves(admin.url, admin.token, FAKE_PIPE_ID, {"answer_chunks": 3, "delay_ms": 20})
    content, reasoning = [], []
    for chunk in owui.chat_completion_stream(admin.url, admin.token, FAKE_PIPE_ID, [{"role": "user", "content": "hi"}]):
        delta = chunk["choices"][0]["delta"]
        content.append(delta.get("content") or "")
        reasoning.append(delta.get("reasoning_content") or "")
    assert "".join(content) == fake_pipe.answer_text(3)
    assert "".join(reasoning) == "".join(fake_pipe.REASONING)


def test_browser_streams_status_reasoning_and_answer(admin: Admin, fake_pipe: ModuleType, run_chat: RunChat) -> None:
    owui.set_valves(admin.url, admin.token, FAKE_PIPE_ID, {"answer_chunks": 10, "delay_ms": 200})
    expected = fake_pipe.answer_text(10)

    report = run_chat(FAKE_PIPE_ID, "Hello, fake pipe")

    assert "Fake Pipe" in (report["selectedModel"] or "")
    # The status line (emitter) was visible while the pipe worked, and hidden at the end.
    assert "Thinking…" in report["statusTexts"], report["samples"]
    assert report["final"]["status"] is None
    # The answer grew in front of the user, sample by sample.
    lengths = _streaming_lengths(report)
    assert len(set(lengths)) >= 2, report["samples"]
    assert lengths == sorted(lengths)
    assert min(lengths) < len(expected)
    # The reasoning block: live spinner, then the collapsed "Thought for ..." header.
    assert any(r.startswith("Thought for") for r in report["reasoningTexts"]), report["reasoningTexts"]
    assert (report["final"]["reasoning"] or "").startswith("Thought for")
    # The final text, and the same after a reload (persisted).
    assert report["final"]["text"] == expected
    assert report["final"]["done"]
    assert report["reload"]["text"] == expected
    assert (report["reload"]["reasoning"] or "").startswith("Thought for")
    assert len(report["screenshots"]) >= 3


def test_browser_stop_button_keeps_partial_answer(admin: Admin, fake_pipe: ModuleType, run_chat: RunChat) -> None:
    chunks = 60  # ~12 s of answer: long enough to stop in the middle
    owui.set_valves(admin.url, admin.token, FAKE_PIPE_ID, {"answer_chunks": chunks, "delay_ms": 200})
    full = fake_pipe.answer_text(chunks)

    report = run_chat(FAKE_PIPE_ID, "Tell me a long story", stop_after_ms=3000)

    assert report["stopped"], report["samples"]
    partial = report["final"]["text"]
    assert 0 < len(partial) < len(full)
    assert full.startswith(partial)
    # The partial answer is what got saved.
    assert report["reload"]["text"] == partial
    # The pipe's CancelledError handler emitted a hidden final status: no stale "Thinking…" line.
    assert report["final"]["status"] is None
    assert report["reload"]["status"] is None


def test_non_admin_sees_pipe_after_grant(admin: Admin, fake_pipe: ModuleType) -> None:
    user_token = owui.add_user(admin.url, admin.token, "Student", "student@example.com", "e2e-student-password")
    assert FAKE_PIPE_ID not in owui.list_models(admin.url, user_token)
    owui.grant_model(admin.url, admin.token, FAKE_PIPE_ID, "Fake Pipe")
    assert FAKE_PIPE_ID in owui.list_models(admin.url, user_token)
