"""Composable anyio stages that turn a Letta agent's stream into Server-Sent Events.

Pure, synchronous cores (tested without an event loop):
:mod:`~pipeline.letta_map` (Letta chunks → events), :mod:`~pipeline.coalesce`
(merging deltas), :mod:`~pipeline.sse` (SSE framing both ways), :mod:`~pipeline.wire`
(event JSON).  Thin anyio stages around them: :mod:`~pipeline.source`,
:mod:`~pipeline.filter`, :mod:`~pipeline.throttle`, :mod:`~pipeline.keepalive`,
:mod:`~pipeline.encode`, wired by :func:`~pipeline.compose.open_pipeline` (a task per
stage) or :func:`~pipeline.compose.open_flow` (pure steps fused into their neighbour's
task, the throttle as a boundary fed from its upstream's task, batching links).
:mod:`~pipeline.letta_raw` reads Letta's stream as bytes (our SSE parser, orjson) instead
of a pydantic model per chunk.  No stage knows about HTTP or Quart; all run under asyncio
and trio.
"""

from .compose import Boundary, Step, fuse, open_flow, open_pipeline
from .encode import encode_sse
from .errors import ConsumerStalled
from .events import Done, Error, Event, Keepalive, Reasoning, Status, Text, ToolCall, ToolResult, Usage
from .filter import filter_letta
from .halt import Halt
from .keepalive import IdleKeepalive, keepalive
from .letta_map import LettaMapper
from .letta_raw import RawLettaStream, open_raw_stream
from .letta_turn import LettaTurn, letta_source, start_turn
from .presets import letta_events, letta_sse
from .source import read_source
from .sse import ServerSentEvent, SSEDecoder, SSEEncoder, SSEParser
from .streams import BatchReceive, BatchSend
from .tap import Observe, tap
from .throttle import Throttle, throttle
from .wire import ProtocolError, parse_event

__all__ = [
    "BatchReceive",
    "BatchSend",
    "Boundary",
    "ConsumerStalled",
    "Done",
    "Error",
    "Event",
    "Halt",
    "IdleKeepalive",
    "Keepalive",
    "LettaMapper",
    "LettaTurn",
    "Observe",
    "ProtocolError",
    "RawLettaStream",
    "Reasoning",
    "SSEDecoder",
    "SSEEncoder",
    "SSEParser",
    "ServerSentEvent",
    "Status",
    "Step",
    "Text",
    "Throttle",
    "ToolCall",
    "ToolResult",
    "Usage",
    "encode_sse",
    "filter_letta",
    "fuse",
    "keepalive",
    "letta_events",
    "letta_source",
    "letta_sse",
    "open_flow",
    "open_pipeline",
    "open_raw_stream",
    "parse_event",
    "read_source",
    "start_turn",
    "tap",
    "throttle",
]
