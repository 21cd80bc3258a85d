"""Composable anyio stages that turn a Letta agent's stream into Server-Sent Events.

Pure, synchronous cores (tested without an event loop):
:mod:`~pipeline.letta_map` (Letta chunks → events), :mod:`~pipeline.coalesce`
(merging deltas), :mod:`~pipeline.sse` (SSE framing both ways), :mod:`~pipeline.wire`
(event JSON).  Thin anyio stages around them: :mod:`~pipeline.source`,
:mod:`~pipeline.filter`, :mod:`~pipeline.throttle`, :mod:`~pipeline.keepalive`,
:mod:`~pipeline.encode`, wired by :func:`~pipeline.compose.open_pipeline`.  No stage
knows about HTTP or Quart; all run under asyncio and trio.
"""

from .compose import open_pipeline
from .encode import encode_sse
from .errors import ConsumerStalled
from .events import Done, Error, Event, Keepalive, Reasoning, Status, Text, ToolCall, ToolResult, Usage
from .filter import filter_letta
from .keepalive import keepalive
from .letta_map import LettaMapper
from .letta_turn import LettaTurn, letta_source, start_turn
from .presets import letta_events, letta_sse
from .source import read_source
from .sse import ServerSentEvent, SSEDecoder, SSEEncoder, SSEParser
from .tap import tap
from .throttle import throttle
from .wire import ProtocolError, parse_event

__all__ = [
    "ConsumerStalled",
    "Done",
    "Error",
    "Event",
    "Keepalive",
    "LettaMapper",
    "LettaTurn",
    "ProtocolError",
    "Reasoning",
    "SSEDecoder",
    "SSEEncoder",
    "SSEParser",
    "ServerSentEvent",
    "Status",
    "Text",
    "ToolCall",
    "ToolResult",
    "Usage",
    "encode_sse",
    "filter_letta",
    "keepalive",
    "letta_events",
    "letta_source",
    "letta_sse",
    "open_pipeline",
    "parse_event",
    "read_source",
    "start_turn",
    "tap",
    "throttle",
]
