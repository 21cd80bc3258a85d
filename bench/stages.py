"""The pipeline stages alone, in-process, under asyncio and trio.

An in-memory source of Letta chunks (a ping, assistant deltas, stop reason, usage)
read to the end two ways: **tasks** — SDK models through source → filter → throttle →
keepalive → encode with a task per stage and one-item links (:func:`open_pipeline`,
the unfused form); **fused** — the raw stream's ``dict`` messages through the service's
composition (:func:`~pipeline.presets.letta_sse`'s parts: the map fused into the source,
the throttle boundary, the keepalive timer and encoding in the reader, which takes every
ready frame at once).  Every run checks that the concatenated text is exactly what went
in and that the last frame is ``done``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
from letta_client.types.agents import AssistantMessage
from letta_client.types.agents.letta_streaming_response import LettaPing, LettaStopReason, LettaUsageStatistics

from pipeline.compose import open_flow, open_pipeline
from pipeline.encode import encode_sse
from pipeline.filter import filter_letta
from pipeline.keepalive import IdleKeepalive, keepalive
from pipeline.letta_map import LettaMapper
from pipeline.source import read_source
from pipeline.sse import SSEEncoder, decode_events
from pipeline.streams import Send
from pipeline.throttle import Throttle, throttle

from .client import BenchError
from .stats import median, r


def make_chunks(count: int) -> list[Any]:
    now = datetime.now(UTC)
    chunks: list[Any] = [LettaPing(id="ping-1", date=now, message_type="ping", run_id="run-1")]
    chunks += [
        AssistantMessage(id="message-1", date=now, content=f" w{i}", message_type="assistant_message", run_id="run-1")
        for i in range(count)
    ]
    chunks.append(LettaStopReason(stop_reason="end_turn", message_type="stop_reason"))
    chunks.append(
        LettaUsageStatistics(
            completion_tokens=count,
            prompt_tokens=1,
            total_tokens=count + 1,
            step_count=1,
            message_type="usage_statistics",
        )
    )
    return chunks


async def _items(chunks: list[Any]) -> Any:
    for chunk in chunks:
        yield chunk


async def _source(chunks: list[Any], send: Send) -> None:
    await read_source(_items(chunks), send)


async def one_run(chunks: list[Any], window: float) -> tuple[float, list[bytes]]:
    frames: list[bytes] = []
    began = time.perf_counter()
    async with open_pipeline(
        partial(_source, chunks),
        filter_letta,
        partial(throttle, window=window),
        partial(keepalive, interval=15.0),
        encode_sse,
    ) as recv:
        async for frame in recv:
            frames.append(frame)
    return time.perf_counter() - began, frames


async def fused_run(chunks: list[Any], window: float) -> tuple[float, list[bytes]]:
    frames: list[bytes] = []
    began = time.perf_counter()
    async with open_flow(
        partial(_source, chunks), LettaMapper(), Throttle(window), IdleKeepalive(15.0), SSEEncoder()
    ) as recv:
        while True:
            try:
                frames += await recv.receive_ready()
            except anyio.EndOfStream:
                break
    return time.perf_counter() - began, frames


def check(frames: list[bytes], count: int, label: str) -> None:
    events = list(decode_events(frames))
    text = "".join(getattr(e, "content", "") for e in events if type(e).__name__ == "Text")
    if text != "".join(f" w{i}" for i in range(count)) or type(events[-1]).__name__ != "Done":
        raise BenchError(f"{label}: the pipeline's output does not match its input")


def run(quick: bool, runs: int) -> dict[str, Any]:
    count = 2000 if quick else 20000
    chunks = make_chunks(count)
    raw = [chunk.model_dump(mode="json") for chunk in chunks]  # what the raw stream yields
    out: dict[str, Any] = {}
    for backend in ("asyncio", "trio"):
        for window in (0.0, 0.05):
            for form, run_one, items in (("tasks", one_run, chunks), ("fused", fused_run, raw)):
                rates, frames_n = [], []
                for i in range(runs + 1):
                    elapsed, frames = anyio.run(run_one, items, window, backend=backend)
                    check(frames, count, f"stages {form} {backend} w={window}")
                    if i:
                        rates.append(len(items) / elapsed)
                        frames_n.append(len(frames))
                key = f"{form}, {backend}, w={window * 1000:g}ms"
                out[key] = {"chunks": len(items), "chunks_per_s": r(median(rates), 0), "frames": median(frames_n)}
                print(f"  {key}: {out[key]}", flush=True)
    return out
