"""Wiring stages together: one task group, small buffers, one owner.

:func:`open_pipeline` starts a source and any number of stages, each linked to the
next by a memory object stream of ``buffer`` items (small, so a slow consumer slows
the source down instead of filling memory).  It yields the last stage's receive
stream to the caller, who reads it in the same task that entered the context.

Leaving the context — normally, by an exception, or by cancellation (a client that
went away) — cancels every stage still running and waits for it, so each closes its
streams and the source closes what it reads.  An exception in any stage cancels the
others and the caller's block, and is raised from the ``async with``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .streams import Source, Stage


@asynccontextmanager
async def open_pipeline(
    source: Source, *stages: Stage, buffer: int = 1
) -> AsyncIterator[MemoryObjectReceiveStream[Any]]:
    """Run ``source`` → ``stages`` in a task group; yield the receive end of the last one."""
    async with anyio.create_task_group() as tg:
        send, recv = anyio.create_memory_object_stream[Any](buffer)
        tg.start_soon(source, send)
        for stage in stages:
            next_send, next_recv = anyio.create_memory_object_stream[Any](buffer)
            tg.start_soon(stage, recv, next_send)
            recv = next_recv
        with recv:
            try:
                yield recv
            finally:
                tg.cancel_scope.cancel()
