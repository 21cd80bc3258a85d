"""Part 6: the real Letta server (0.16.8) with the scripted LLM, direct vs through the service.

Four paths, one turn at a time on one agent (Letta interleaves concurrent turns of
one agent): letta-client straight to Letta (foreground streaming), the service as
deployed by default (its turn log in Redis, so a dropped stream resumes from any
replica; the throttle's leading edge on), the same with the trailing-only throttle
(``STREAM_THROTTLE_LEADING=off``: the A/B of the leading edge, in the same run), and the
service with ``STREAM_RESUME=off`` (no log, the store in memory).

Order matters on a real Letta: it is still finishing a turn (the run's final update,
its steps) after the stream's last byte, so a turn sent at once after another starts
slower (measured through the service: Letta answered the request's headers in ~130-150 ms
right after a turn, ~80 ms half a second later), and a fixed rotation of the paths always
puts the same path right after the direct one.  So every turn waits :data:`SETTLE`
seconds (a student reads the answer before sending the next message), and the runs
alternate the rotation's direction, so each path follows each other path equally often.

Then the reconnect: a stream dropped after 10 text frames is resumed with
``Last-Event-ID`` through the same replica and through another one (two service
processes on one Redis), timed from the request to the first replayed frame — after
:data:`REPLAY_AFTER` seconds away (frames wait in the log: what a reconnect replays),
and, once more on the same replica, at once (*caught up*: the client already had every
frame, so its first frame is the next one the runner makes, up to one throttle window
later — the pace of the answer, not the resume).  The prompt ``[long N] [slow MS]``
makes the scripted model stream N word deltas MS apart, a token pace, so the gaps
between text frames show how smoothly the answer arrives.  Every run's text must be
exactly ``w1 ... wN``.  One raw request also records how the real stream ends (the
emulator copies that framing).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from letta_client import AsyncLetta
from letta_client.types.agents import AssistantMessage

from devstack.stack import REPO_ROOT, LocalStack
from pipeline.events import Text
from pipeline.sse import SSEParser
from pipeline.wire import parse_event

from .client import TOKEN, BenchError, one_stream
from .latency import post_json
from .procs import Child
from .stats import median, pct, r

SETTLE = 0.5
"""Seconds between turns: Letta finishes the previous run meanwhile."""
REPLAY_AFTER = 0.3
"""Seconds a dropped client stays away before it resumes (frames pile up in the log meanwhile)."""


def expected(words: int) -> str:
    return " ".join(f"w{i}" for i in range(1, words + 1))


Sample = tuple[float, float, list[int]]
"""TTFE ms, total ms, arrival times (ns) of the text frames."""


async def direct(client: AsyncLetta, agent_id: str, prompt: str, want: str) -> Sample:
    began = time.monotonic_ns()
    parts, arrivals = [], []
    stream = await client.agents.messages.create(  # the same call the service makes (foreground)
        agent_id, streaming=True, input=prompt, stream_tokens=True, include_pings=True, enable_thinking="false"
    )
    async with stream:
        async for chunk in stream:
            if isinstance(chunk, AssistantMessage) and isinstance(chunk.content, str):
                arrivals.append(time.monotonic_ns())
                parts.append(chunk.content)
    if "".join(parts) != want:
        raise BenchError(f"real Letta direct: wrong text ({len(''.join(parts))} chars)")
    return (arrivals[0] - began) / 1e6, (time.monotonic_ns() - began) / 1e6, arrivals


async def raw_tail(url: str, agent_id: str) -> list[str]:
    """The last lines of a real stream, as bytes on the wire."""
    body = {"input": "hello", "streaming": True, "stream_tokens": True, "include_pings": True}
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream(
            "POST",
            f"{url}/v1/agents/{agent_id}/messages",
            json=body,
            headers={"User-Agent": "letta-client/1.12.1"},  # Letta streams only to clients it takes for SDK 1.0+
        ) as response,
    ):
        text = (await response.aread()).decode()
    frames = [f for f in text.split("\n\n") if f]
    return [f[:80] for f in frames[-3:]]


async def via_service(svc: Child, agent_id: str, prompt: str, want: str) -> Sample:
    body = {"agent_id": agent_id, "enable_thinking": False, "message": prompt}
    for _ in range(100):  # the service frees the agent just after a stream ends: 409 until then
        res = await one_stream("127.0.0.1", svc.port, "/chat/stream", body, limit_s=120, stamped=False)
        if res.status != 409:
            break
        await asyncio.sleep(0.02)
    if "".join(res.text) != want or not res.ended:
        raise BenchError(f"real Letta via service: wrong text or no done ({res.status} {res.other[:2]})")
    return (res.first_text_ns - res.started_ns) / 1e6, (res.ended_ns - res.started_ns) / 1e6, res.text_ns


async def reconnect(drop: Child, resume: Child, agent_id: str, prompt: str, want: str, away: float) -> float:
    """Drop a stream on ``drop`` after 10 text frames, wait ``away`` s; ms from the resume request on ``resume``
    to its first frame."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"agent_id": agent_id, "enable_thinking": False, "message": prompt}
    told: list[str] = []
    async with httpx.AsyncClient(timeout=120, headers=headers) as http:
        last_id, parser = "", SSEParser()
        for _ in range(100):
            async with http.stream("POST", drop.url + "/chat/stream", json=body) as response:
                if response.status_code == 409:  # the previous turn is being released
                    await asyncio.sleep(0.02)
                    continue
                async for chunk in response.aiter_bytes():
                    for sse in parser.feed(chunk):
                        event = parse_event(sse.data)
                        if isinstance(event, Text):
                            told.append(event.content)
                    last_id = parser.decoder.last_event_id
                    if len(told) >= 10:
                        break
            break
        await asyncio.sleep(away)
        began = time.monotonic_ns()
        first: int | None = None
        rest, parser = [], SSEParser()
        async with http.stream(
            "POST", resume.url + "/chat/stream", json=body, headers={"Last-Event-ID": last_id}
        ) as response:
            async for chunk in response.aiter_bytes():
                for sse in parser.feed(chunk):
                    event = parse_event(sse.data)
                    if first is None and event is not None:
                        first = time.monotonic_ns()
                    if isinstance(event, Text):
                        rest.append(event.content)
    if "".join(told + rest) != want or first is None:
        raise BenchError("real Letta: a resumed stream did not complete the answer exactly")
    return (first - began) / 1e6


def gaps_ms(arrivals: list[int]) -> list[float]:
    return [(b - a) / 1e6 for a, b in itertools.pairwise(arrivals)]


async def compare(
    letta_url: str, services: dict[str, Child], agent_id: str, words: int, pace_ms: int, runs: int
) -> dict[str, Any]:
    prompt = f"bench [long {words}] [slow {pace_ms}]"
    want = expected(words)
    client = AsyncLetta(base_url=letta_url, timeout=120, max_retries=0)
    paths: dict[str, Callable[[], Awaitable[Sample]]] = {
        "direct (AsyncLetta, foreground)": partial(direct, client, agent_id, prompt, want)
    }
    for name, svc in services.items():
        paths[name] = partial(via_service, svc, agent_id, prompt, want)
    samples: dict[str, list[Sample]] = {name: [] for name in paths}
    try:
        tail = await raw_tail(letta_url, agent_id)
        names = list(paths)
        for i in range(runs + 1):
            order = names[i % len(names) :] + names[: i % len(names)]  # Letta drifts as the history grows
            if i % 2:
                order.reverse()  # each path follows each other one equally often
            for name in order:
                await asyncio.sleep(SETTLE)
                sample = await paths[name]()
                if i:  # run 0 warms up
                    samples[name].append(sample)
    finally:
        await client.close()
    out: dict[str, Any] = {"stream_end_on_wire": tail, "words": words, "pace_ms": pace_ms}
    for name, vals in samples.items():
        out[name] = {
            "ttfe_ms": r(median([v[0] for v in vals]), 1),
            "total_ms": r(median([v[1] for v in vals]), 1),
            "text_frames": r(median([len(v[2]) for v in vals]), 1),
            "gap_p50_ms": r(median([pct(gaps_ms(v[2]), 50) for v in vals]), 1),
            "gap_max_ms": r(median([max(gaps_ms(v[2]), default=0.0) for v in vals]), 1),
            "ttfe_runs_ms": [r(v[0], 1) for v in vals],  # in run order: the spread behind the median
            "total_runs_ms": [r(v[1], 1) for v in vals],
        }
    return out


DEFAULT = "through /chat/stream (default: turn log in Redis)"
TRAILING = "through /chat/stream, default but STREAM_THROTTLE_LEADING=off"
NO_LOG = "through /chat/stream, STREAM_RESUME=off"


def run(quick: bool, runs: int, log_dir: Path) -> dict[str, Any]:
    words, pace_ms = (30, 20) if quick else (100, 20)
    with tempfile.TemporaryDirectory(prefix="bench-letta-") as data, LocalStack(REPO_ROOT, Path(data)) as stack:

        def service(name: str, *args: str) -> Child:
            return Child(
                "bench.service_proc", "--letta", stack.letta_url, "--window", "0.05",
                "--model", stack.model_handle, "--embedding", stack.embedding_handle, *args,
                health="/health", log=log_dir / f"service-real-{name}.log",
            )  # fmt: skip

        children = {
            DEFAULT: service("default", "--redis", stack.redis_url),
            TRAILING: service("trailing", "--redis", stack.redis_url, "--leading", "off"),
            NO_LOG: service("no-log", "--resume", "off"),
        }
        other = service("replica-b", "--redis", stack.redis_url)
        with contextlib.ExitStack() as running:
            for child in [*children.values(), other]:
                running.enter_context(child)
            first = children[DEFAULT]
            agent_id = post_json(first.url + "/agents", {"user_id": "bench", "agent_type": "tutor"})["agent_id"]
            out = asyncio.run(compare(stack.letta_url, children, agent_id, words, pace_ms, runs))
            prompt, want = f"bench [long {words}] [slow {pace_ms}]", expected(words)
            same = [asyncio.run(reconnect(first, first, agent_id, prompt, want, REPLAY_AFTER)) for _ in range(runs)]
            across = [asyncio.run(reconnect(first, other, agent_id, prompt, want, REPLAY_AFTER)) for _ in range(runs)]
            caught_up = [asyncio.run(reconnect(first, first, agent_id, prompt, want, 0.0)) for _ in range(runs)]
            out["reconnect_to_first_frame_ms"] = {
                "same replica p50": r(median(same), 1),
                "other replica p50": r(median(across), 1),
                "same replica max": r(max(same), 1),
                "other replica max": r(max(across), 1),
                "caught up (next frame not made yet), same replica p50": r(median(caught_up), 1),
            }
            out["reconnect_away_s"] = REPLAY_AFTER
            out["settle_s"] = SETTLE
            out["stack_startup_s"] = stack.startup_seconds
    print(f"  real Letta: {out}", flush=True)
    return out


def main() -> None:
    """``python -m bench.real_letta [--runs N]``: this part alone, merged into ``bench/results/latest.{json,md}``.

    The other parts' figures stay those of the last full run; this section says when it was measured.
    """
    import argparse
    import json
    from datetime import UTC, datetime

    from . import report
    from .procs import loadavg

    parser = argparse.ArgumentParser(prog="python -m bench.real_letta")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    began, started, load = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds"), loadavg()
    out = run(False, args.runs, Path(tempfile.mkdtemp(prefix="letta-stream-bench-")))
    out["run"] = {
        "started": started,
        "loadavg": load,
        "loadavg_end": loadavg(),
        "seconds": round(time.monotonic() - began, 1),
    }
    latest = args.out / "latest.json"
    results = json.loads(latest.read_text())
    results["real_letta"] = out
    results.get("skipped", {}).pop("real_letta", None)
    print(report.write(results, args.out).read_text())


if __name__ == "__main__":
    main()
