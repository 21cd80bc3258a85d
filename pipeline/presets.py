"""The stage chains letta-stream runs, named once so the service and scripts agree."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .compose import open_pipeline
from .encode import encode_sse
from .filter import filter_letta
from .keepalive import keepalive
from .letta_map import LettaMapper
from .letta_turn import Abandon, LettaTurn, letta_source
from .sse import SSEEncoder
from .streams import Stage
from .tap import tap
from .throttle import throttle


def letta_events(
    turn: LettaTurn,
    *,
    mapper: LettaMapper | None = None,
    window: float = 0.05,
    buffer: int = 1,
) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[Any]]:
    """source → filter → throttle: the turn as coalesced events (for scripts)."""
    return open_pipeline(
        partial(letta_source, turn),
        partial(filter_letta, mapper=mapper),
        partial(throttle, window=window),
        buffer=buffer,
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
    abandon: Abandon | None = None,
    stop: anyio.Event | None = None,
    buffer: int = 1,
) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[Any]]:
    """source → filter → throttle → keepalive → [tap] → encode: the turn as SSE frame bytes.

    ``observe`` sees every event just before it is encoded; ``send_timeout`` ends the
    stream when the consumer takes nothing for that long.
    """
    stages: list[Stage] = [
        partial(filter_letta, mapper=mapper),
        partial(throttle, window=window),
        partial(keepalive, interval=keepalive_interval),
    ]
    if observe is not None:
        stages.append(partial(tap, observe=observe))
    stages.append(partial(encode_sse, encoder=encoder, send_timeout=send_timeout))
    source = partial(letta_source, turn, cancel_timeout=cancel_timeout, abandon=abandon, stop=stop)
    return open_pipeline(source, *stages, buffer=buffer)
