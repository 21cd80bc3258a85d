"""The real chain, end to end (issue 4).

Chromium → OpenWebUI 0.12.4 → ``pipe/letta_pipe.py`` (uploaded unchanged as a Function, valves set through
OpenWebUI's API) → our service (hypercorn thread) → letta-client → the real Letta server → Postgres, with the
scripted LLM behind Letta. Every test runs as the session's OpenWebUI admin, so they share one Letta agent
(tagged ``user:<OpenWebUI user id>``); assertions on runs therefore compare before/after.

Each browser test writes its screenshots and the full ``chat.mjs`` report (``report.json``) to
``.stack/e2e-artifacts/<test name>/``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from letta_client import AsyncLetta

from devstack import openwebui as owui
from devstack.stack import LocalStack
from tests.conftest import RESUME_GRACE
from tests.scripted_llm import expected_answer

from .conftest import Admin, RunChat

pytestmark = pytest.mark.e2e

#: What the service sends as status lines while the agent works (``pipeline`` status texts).
WORKING_STATUSES = {"Thinking...", "Using conversation_search..."}


# --- helpers -------------------------------------------------------------------------------------------


def _user_id(admin: Admin) -> str:
    """The OpenWebUI id of the admin: the pipe passes it to the service, which tags the agent with it."""
    resp = httpx.get(f"{admin.url}/api/v1/auths/", headers={"Authorization": f"Bearer {admin.token}"}, timeout=30)
    resp.raise_for_status()
    user_id: str = resp.json()["id"]
    return user_id


async def _runs_async(letta_url: str, user_id: str) -> dict[str, str]:
    """``{run id: status}`` of every run of the user's agent (empty if the agent does not exist yet)."""
    async with AsyncLetta(base_url=letta_url, timeout=30) as letta:
        tags = [f"user:{user_id}", "agent_type:tutor"]  # the tutor's (test_agent_type_menu.py makes a coach)
        agents = [a async for a in letta.agents.list(tags=tags, match_all_tags=True)]
        assert len(agents) <= 1, f"more than one agent for one student: {[a.id for a in agents]}"
        if not agents:
            return {}
        return {r.id: str(r.status) async for r in letta.runs.list(agent_id=agents[0].id)}


async def _conversation_of_run_async(letta_url: str, run_id: str) -> tuple[str | None, list[str | None]]:
    """The summary of the Letta conversation a run ran in (``None`` outside any) and its user messages' otids."""
    async with AsyncLetta(base_url=letta_url, timeout=30) as letta:
        run = await letta.runs.retrieve(run_id)
        if run.conversation_id is None:
            return None, []
        page: Any = await letta.conversations.messages.list(
            run.conversation_id, limit=50, include_return_message_types=["user_message"]
        )
        return (await letta.conversations.retrieve(run.conversation_id)).summary, [m.otid for m in page.items]


def letta_runs(stack: LocalStack, user_id: str) -> dict[str, str]:
    return asyncio.run(_runs_async(stack.letta_url, user_id))


async def _run_status_async(letta_url: str, run_id: str) -> str:
    async with AsyncLetta(base_url=letta_url, timeout=30) as letta:
        return str((await letta.runs.retrieve(run_id)).status)


def wait_for_run_status(stack: LocalStack, run_id: str, wanted: str, timeout: float) -> tuple[str, float]:
    """Poll the run until it has status ``wanted`` or ``timeout`` passes; ``(last status, seconds waited)``."""
    began = time.monotonic()
    status = asyncio.run(_run_status_async(stack.letta_url, run_id))
    while status != wanted and time.monotonic() - began < timeout:
        time.sleep(0.2)
        status = asyncio.run(_run_status_async(stack.letta_url, run_id))
    return status, time.monotonic() - began


def wait_for_settled_runs(stack: LocalStack, user_id: str, timeout: float = 10.0) -> dict[str, str]:
    """The user's runs once none is still ``created``/``running`` (background tasks may still be in flight)."""
    deadline = time.monotonic() + timeout
    runs = letta_runs(stack, user_id)
    while any(s in ("created", "running") for s in runs.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        runs = letta_runs(stack, user_id)
    return runs


def save_report(report: dict[str, Any], artifacts_dir: Path) -> None:
    (artifacts_dir / "report.json").write_text(json.dumps(report, indent=2))


def streaming_lengths(report: dict[str, Any]) -> list[int]:
    """Answer lengths sampled while the answer was still streaming (non-empty, not done, stop visible)."""
    return [s["textLength"] for s in report["samples"] if s["textLength"] > 0 and not s["done"] and s["stopVisible"]]


# --- tests ---------------------------------------------------------------------------------------------


def test_real_chain_browser_streams_status_reasoning_and_answer(
    admin: Admin, letta_pipe: str, letta_stack: LocalStack, run_chat: RunChat, artifacts_dir: Path
) -> None:
    prompt = "[think] [tool] [slow 60] [long 40] Help me start my essay"
    expected = expected_answer(prompt)
    user_id = _user_id(admin)
    runs_before = letta_runs(letta_stack, user_id)

    report = run_chat(letta_pipe, prompt)
    save_report(report, artifacts_dir)
    print(f"\nbrowser timings (ms since send / since start): {report['timings']}")

    assert "Letta Tutor" in (report["selectedModel"] or "")
    # The pipe's status line (from the service's status events) was on screen while the agent worked...
    assert WORKING_STATUSES & set(report["statusTexts"]), report["samples"]
    # ...and the final hidden "Done" status removed it.
    assert report["final"]["status"] is None, report["final"]
    # The answer grew in front of the user.
    lengths = streaming_lengths(report)
    assert len(set(lengths)) >= 2, report["samples"]
    assert lengths == sorted(lengths), report["samples"]
    assert min(lengths) < len(expected)
    # OpenWebUI's native reasoning block: "Thinking…" while streaming, "Thought for …" at the end.
    assert any(r.startswith("Thought for") for r in report["reasoningTexts"]), report["reasoningTexts"]
    assert (report["final"]["reasoning"] or "").startswith("Thought for"), report["final"]
    # The exact answer of the scripted model (one markdown paragraph: innerText is the text itself).
    assert report["final"]["text"] == expected
    assert report["final"]["done"]
    # Persisted: the same after a reload.
    assert report["reload"]["text"] == expected
    assert (report["reload"]["reasoning"] or "").startswith("Thought for"), report["reload"]
    assert len(report["screenshots"]) >= 3
    # One user turn → one Letta run, although OpenWebUI also called the pipe for title/tags/follow-ups.
    runs_after = wait_for_settled_runs(letta_stack, user_id)
    new_runs = {k: v for k, v in runs_after.items() if k not in runs_before}
    assert len(new_runs) == 1, new_runs
    assert list(new_runs.values()) == ["completed"], new_runs
    # ... in the Letta conversation of this OpenWebUI chat (one conversation per chat)
    summary, otids = asyncio.run(_conversation_of_run_async(letta_stack.letta_url, next(iter(new_runs))))
    assert (summary or "").startswith("openwebui-chat:"), summary
    # ... its user message named by OpenWebUI's ids (how a regenerate or an edit is recognised)
    assert len(otids) == 1, otids
    assert (otids[0] or "").startswith("owui:"), otids


def test_real_chain_browser_stop_keeps_partial_answer_and_cancels_the_letta_run(
    admin: Admin, letta_pipe: str, letta_stack: LocalStack, run_chat: RunChat, artifacts_dir: Path
) -> None:
    prompt = "[long 400] [slow 40] Tell me everything about essay structure"
    full = expected_answer(prompt)
    user_id = _user_id(admin)
    runs_before = wait_for_settled_runs(letta_stack, user_id)

    report = run_chat(letta_pipe, prompt, stop_after_ms=3000)
    save_report(report, artifacts_dir)
    print(f"\nbrowser timings (ms): {report['timings']}; stop pressed at {report['stopPressedAtMs']} ms")

    assert report["stopped"], report["samples"]
    partial = report["final"]["text"]
    assert 0 < len(partial) < len(full), report["final"]
    assert full.startswith(partial), (partial[-80:], report["final"])
    # The partial answer is what got saved.
    assert report["reload"]["text"] == partial
    # No status line claims the agent is still working (the pipe's CancelledError handler).
    assert report["final"]["status"] not in WORKING_STATUSES, report["final"]
    assert report["reload"]["status"] not in WORKING_STATUSES, report["reload"]
    # Stop cancelled the agent's run in Letta at once (the pipe's POST /chat/cancel), not after the
    # grace period a merely dropped connection gets.
    runs_after = letta_runs(letta_stack, user_id)
    new_runs = [k for k in runs_after if k not in runs_before]
    assert len(new_runs) == 1, (runs_before, runs_after)
    status, waited = wait_for_run_status(letta_stack, new_runs[0], "cancelled", timeout=RESUME_GRACE / 2)
    print(f"Letta run {new_runs[0]}: {status} (waited {waited:.1f} s after the browser run ended)")
    assert status == "cancelled"


def test_real_chain_api_stream_and_title_task_cost_one_agent_turn(
    admin: Admin, letta_pipe: str, letta_stack: LocalStack
) -> None:
    prompt = "[think] [long 12] Which essay topic should I pick?"
    user_id = _user_id(admin)
    runs_before = wait_for_settled_runs(letta_stack, user_id)

    content, reasoning, usages = [], [], []
    messages = [{"role": "user", "content": prompt}]
    for chunk in owui.chat_completion_stream(admin.url, admin.token, letta_pipe, messages):
        if chunk.get("usage"):
            usages.append(chunk["usage"])
        if not chunk.get("choices"):
            continue  # the pipe's usage chunk: OpenWebUI passes it on as it is
        delta = chunk["choices"][0]["delta"]
        content.append(delta.get("content") or "")
        reasoning.append(delta.get("reasoning_content") or "")
    assert "".join(content) == expected_answer(prompt)
    assert "".join(reasoning)  # the service streamed reasoning (ENABLE_THINKING) through the pipe
    # The turn's token usage, once (the scripted model counts 100 prompt tokens and one per answer word).
    assert len(usages) == 1, usages
    assert usages[0]["completion_tokens"] == len(expected_answer(prompt).split()), usages

    # A background task (as OpenWebUI sends after the first answer) is answered by the pipe itself.
    title_messages = [*messages, {"role": "assistant", "content": "".join(content)}]
    resp = httpx.post(
        f"{admin.url}/api/v1/tasks/title/completions",
        json={"model": letta_pipe, "messages": title_messages},
        headers={"Authorization": f"Bearer {admin.token}"},
        timeout=60,
    )
    resp.raise_for_status()
    title = json.loads(resp.json()["choices"][0]["message"]["content"])["title"]
    assert title.startswith("[think] [long 12] Which essay"), title

    runs_after = wait_for_settled_runs(letta_stack, user_id)
    new_runs = {k: v for k, v in runs_after.items() if k not in runs_before}
    assert list(new_runs.values()) == ["completed"], new_runs  # one user turn → one run, the title none


def test_real_chain_browser_answer_grows_in_small_steps(
    letta_pipe: str, run_chat: RunChat, artifacts_dir: Path
) -> None:
    """With the defaults the answer visibly grows in small steps, not in a handful of bursts.

    The page samples the answer every 100 ms while a ``[slow 40]`` answer streams (~5 s of text). Letta's
    background mode (the old default) gave ~11 states 500 ms apart here; the foreground path gives ~50.
    """
    prompt = "[think] [long 120] [slow 40] Show me how a paragraph grows"
    expected = expected_answer(prompt)

    report = run_chat(letta_pipe, prompt, extra={"traceText": True, "traceIntervalMs": 100})
    trace = report["textTrace"]
    figures = {
        "distinct_states": trace["distinctStates"],
        "streaming_ms": trace["lastTextMs"] - trace["firstTextMs"],
        "first_text_ms": trace["firstTextMs"],
        "gap_ms": trace["gapMs"],
        "words_per_change": trace["wordsPerChange"],
        "thinking_status_ms": trace["thinkingStatusMs"],
        "thinking_reasoning_ms": trace["thinkingReasoningMs"],
        "thinking_both_ms": trace["thinkingBothMs"],
        "status_lines": trace["statusLines"],
        "page_ticks": trace["ticks"],
        "page_max_tick_gap_ms": trace["maxTickGapMs"],
    }
    report["smoothness"] = figures
    save_report(report, artifacts_dir)
    print(f"\nsmoothness (100 ms DOM samples): {json.dumps(figures)}")

    assert report["final"]["text"] == expected
    states = trace["states"]
    assert states[-1]["length"] == len(expected), states[-5:]
    assert [s["length"] for s in states] == sorted(s["length"] for s in states), states
    # The page's timer really sampled every ~100 ms (a starved timer would hide changes, not invent them).
    assert trace["maxTickGapMs"] < 400, trace["maxTickGapMs"]
    # Many small steps over ~5 s of answer, not a handful of half-second bursts.
    assert trace["distinctStates"] >= 30, figures
    assert trace["gapMs"]["median"] <= 200, figures
