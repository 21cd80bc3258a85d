"""Stream counters and a time-to-first-event histogram, in Prometheus' text format.

Plain counters updated from the event loop's thread only (no locks needed); the
rendering follows the exposition format version 0.0.4.
"""

from __future__ import annotations

from typing import Final

import attrs

TTFE_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES: Final = ("finished", "cancelled", "errored")


@attrs.define
class Histogram:
    buckets: tuple[float, ...] = TTFE_BUCKETS
    counts: list[int] = attrs.field(init=False)
    total: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


@attrs.define
class StreamMetrics:
    active: int = 0
    started: int = 0
    ended: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(OUTCOMES, 0))
    refused_busy: int = 0
    resumed: int = 0
    stops: int = 0
    ttfe: Histogram = attrs.field(factory=Histogram)

    def start(self) -> None:
        self.active += 1
        self.started += 1

    def end(self, outcome: str) -> None:
        self.active -= 1
        self.ended[outcome] += 1

    def render(self, detached_turns: int = 0) -> str:
        """The exposition text; ``detached_turns`` is how many turns wait for their client now."""
        lines = [
            "# HELP letta_stream_active_streams Streams open now.",
            "# TYPE letta_stream_active_streams gauge",
            f"letta_stream_active_streams {self.active}",
            "# HELP letta_stream_streams_started_total Streams started.",
            "# TYPE letta_stream_streams_started_total counter",
            f"letta_stream_streams_started_total {self.started}",
            "# HELP letta_stream_streams_ended_total Streams ended, by outcome.",
            "# TYPE letta_stream_streams_ended_total counter",
            *(f'letta_stream_streams_ended_total{{outcome="{o}"}} {n}' for o, n in self.ended.items()),
            "# HELP letta_stream_turns_refused_total Turns refused because the agent was busy (409).",
            "# TYPE letta_stream_turns_refused_total counter",
            f"letta_stream_turns_refused_total {self.refused_busy}",
            "# HELP letta_stream_streams_resumed_total Streams resumed from a Last-Event-ID.",
            "# TYPE letta_stream_streams_resumed_total counter",
            f"letta_stream_streams_resumed_total {self.resumed}",
            "# HELP letta_stream_stops_total Turns stopped by the client (POST /chat/cancel).",
            "# TYPE letta_stream_stops_total counter",
            f"letta_stream_stops_total {self.stops}",
            "# HELP letta_stream_detached_turns Turns whose client went away, waiting for it to resume.",
            "# TYPE letta_stream_detached_turns gauge",
            f"letta_stream_detached_turns {detached_turns}",
            "# HELP letta_stream_time_to_first_event_seconds From request to the first event sent.",
            "# TYPE letta_stream_time_to_first_event_seconds histogram",
        ]
        for bound, count in zip(self.ttfe.buckets, self.ttfe.counts, strict=True):
            lines.append(f'letta_stream_time_to_first_event_seconds_bucket{{le="{bound}"}} {count}')
        lines += [
            f'letta_stream_time_to_first_event_seconds_bucket{{le="+Inf"}} {self.ttfe.count}',
            f"letta_stream_time_to_first_event_seconds_sum {self.ttfe.total:.6f}",
            f"letta_stream_time_to_first_event_seconds_count {self.ttfe.count}",
        ]
        return "\n".join(lines) + "\n"
