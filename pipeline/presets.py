"""The stage chains letta-stream runs, named once so the service and scripts agree."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

from anyio.streams.memory import MemoryObjectReceiveStream

from .compose import open_flow, open_pipeline
from .encode import encode_sse
from .filter import filter_letta
from .halt import Halt
from .keepalive import IdleKeepalive, keepalive
from .letta_map import LettaMapper
from .letta_turn import LettaTurn, Unfinished, letta_source
from .sse import SSEEncoder
from .streams import Feed, Receive, Stage
from .tap import Observe, tap
from .throttle import Throttle, throttle

DEFAULT_BATCH = 16
"""Items a link may hand over at once to a consumer that is behind (frames of up to 4 KiB of text each)."""


def letta_events(
    turn: LettaTurn,
    *,
    mapper: LettaMapper | None = None,
    window: float = 0.05,
    buffer: int = 1,
    batch: int = DEFAULT_BATCH,
) -> AbstractAsyncContextManager[Receive]:
    """source → map → throttle: the turn as coalesced events (for scripts).

    Two tasks: the source, which maps each chunk and pushes the events into the
    throttle's coalescer (:class:`~pipeline.throttle.Throttle`), and the throttle's writer
    (:func:`~pipeline.compose.open_flow`).  ``batch`` bounds a link's batch (``buffer`` is
    kept for callers of the older form).
    """
    return open_flow(
        partial(letta_source, turn),
        mapper if mapper is not None else LettaMapper(),
        Throttle(window),
        batch=max(batch, buffer),
    )


def letta_sse(
    turn: LettaTurn,
    *,
    mapper: LettaMapper | None = None,
    window: float = 0.05,
    keepalive_interval: float = 15.0,
    encoder: SSEEncoder | None = None,
    send_timeout: float | None = None,
    observe: Callable[[Any], object] | None = None,
    cancel_timeout: float = 5.0,
    unfinished: Unfinished | None = None,
    halt: Halt | None = None,
    buffer: int = 1,
    batch: int = DEFAULT_BATCH,
) -> AbstractAsyncContextManager[Receive]:
    """source → map → throttle → keepalive → [observe] → encode: the turn as SSE frame bytes.

    Two tasks (:func:`~pipeline.compose.open_flow`): the source, which maps each chunk and
    pushes the events into the throttle's coalescer, and the throttle's writer.  The
    keepalive timer, observe and encode run in the reader's task (the HTTP body), which
    takes every ready frame at once (``receive_ready()``).  ``observe`` sees every event
    just before it is encoded; ``send_timeout`` ends the stream when the consumer takes
    nothing for that long.
    """
    parts: list[Feed | Throttle | IdleKeepalive] = [
        mapper if mapper is not None else LettaMapper(),
        Throttle(window),
        IdleKeepalive(keepalive_interval),
    ]
    if observe is not None:
        parts.append(Observe(observe))
    parts.append(encoder if encoder is not None else SSEEncoder())
    source = partial(letta_source, turn, cancel_timeout=cancel_timeout, unfinished=unfinished, halt=halt)
    return open_flow(source, *parts, batch=max(batch, buffer), send_timeout=send_timeout)


def letta_sse_tasks(
    turn: LettaTurn,
    *,
    mapper: LettaMapper | None = None,
    window: float = 0.05,
    keepalive_interval: float = 15.0,
    encoder: SSEEncoder | None = None,
    send_timeout: float | None = None,
    observe: Callable[[Any], object] | None = None,
    cancel_timeout: float = 5.0,
    unfinished: Unfinished | None = None,
    halt: Halt | None = None,
    buffer: int = 1,
) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[Any]]:
    """The same chain with a task per stage and one-item links (the unfused form, for comparison)."""
    stages: list[Stage] = [
        partial(filter_letta, mapper=mapper),
        partial(throttle, window=window),
        partial(keepalive, interval=keepalive_interval),
    ]
    if observe is not None:
        stages.append(partial(tap, observe=observe))
    stages.append(partial(encode_sse, encoder=encoder, send_timeout=send_timeout))
    source = partial(letta_source, turn, cancel_timeout=cancel_timeout, unfinished=unfinished, halt=halt)
    return open_pipeline(source, *stages, buffer=buffer)
