"""The filter stage: Letta chunks in, events out, via :class:`~pipeline.letta_map.LettaMapper`."""

from __future__ import annotations

from .letta_map import LettaMapper
from .streams import Receive, Send


async def filter_letta(recv: Receive, send: Send, *, mapper: LettaMapper | None = None) -> None:
    """Map every chunk of ``recv``; when it ends, send the turn's terminal event.

    Closes both streams.  Pass a ``mapper`` to configure it (e.g. reasoning off) or to
    read what it learnt (``run_id``, ``stop_reason``) afterwards.
    """
    mapper = mapper if mapper is not None else LettaMapper()
    with send, recv:
        async for chunk in recv:
            for event in mapper.feed(chunk):
                await send.send(event)
        for event in mapper.finish():
            await send.send(event)
