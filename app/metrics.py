"""The service's Prometheus metrics, counted in every worker process and shown as one.

One :class:`StreamMetrics` per app.  Two modes, chosen when it is made:

- **single process** (``PROMETHEUS_MULTIPROC_DIR`` unset): the metrics live in a
  registry of their own, so many apps in one process (the tests) never share counts;
- **multiprocess** (``PROMETHEUS_MULTIPROC_DIR`` set before the process started, as
  :mod:`app.launch` does for its workers): prometheus-client writes every worker's
  values to files in that directory, and :meth:`StreamMetrics.render` — in whichever
  worker answers ``GET /metrics`` — sums them all.  Counters and the histogram add
  up over every worker that ever ran (since the launcher started); the two gauges
  (``livesum``) over the workers alive now.

Counted from the event loop's thread only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

TTFE_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES: Final = ("finished", "cancelled", "errored")
CANCEL_RESULTS: Final = ("sent", "failed", "dropped")
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Counters' ``*_created`` series exist only in single-process mode; without them both modes
# expose the same series.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None in single-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


class Tally:
    """A counter without labels: call it to count one (``metrics.resumed()``).

    ``int(tally)`` is the count (over every worker in multiprocess mode).
    """

    def __init__(self, counter: Counter, read: Callable[[], int]) -> None:
        self._counter = counter
        self._read = read

    def __call__(self) -> None:
        self._counter.inc()

    def __int__(self) -> int:
        return self._read()

    def __repr__(self) -> str:
        return f"Tally({int(self)})"


class StreamMetrics:
    """Stream counters and the time-to-first-event histogram; :meth:`render` for ``GET /metrics``."""

    def __init__(self, *, multiprocess: bool | None = None) -> None:
        """``multiprocess`` defaults to whether ``PROMETHEUS_MULTIPROC_DIR`` is set."""
        self.multiprocess = multiprocess_dir() is not None if multiprocess is None else multiprocess
        if self.multiprocess:
            path = multiprocess_dir()
            if path is None or not os.path.isdir(path):
                raise ValueError(f"{MULTIPROC_ENV} must name an existing directory for multiprocess metrics")
            self.registry: CollectorRegistry | None = None  # values go to files; render() collects them
        else:
            self.registry = CollectorRegistry()
        reg = self.registry
        self._active = Gauge(
            "letta_stream_active_streams", "Streams open now.", registry=reg, multiprocess_mode="livesum"
        )
        self._started = Counter("letta_stream_streams_started", "Streams started.", registry=reg)
        self._ended = Counter("letta_stream_streams_ended", "Streams ended, by outcome.", ["outcome"], registry=reg)
        self._refused = Counter(
            "letta_stream_turns_refused", "Turns refused because the agent was busy (409).", registry=reg
        )
        self._resumed = Counter("letta_stream_streams_resumed", "Streams resumed from a Last-Event-ID.", registry=reg)
        self._stops = Counter("letta_stream_stops", "Turns stopped by the client (POST /chat/cancel).", registry=reg)
        self._detached = Gauge(
            "letta_stream_detached_turns",
            "Turns whose client went away, waiting for it to resume.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._running = Gauge(
            "letta_stream_running_turns",
            "Turns whose runner (or takeover) runs in this process now, read from Letta or not.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self._ttfe = Histogram(
            "letta_stream_time_to_first_event_seconds",
            "From request to the first event sent.",
            buckets=TTFE_BUCKETS,
            registry=reg,
        )
        self._cancels = Counter(
            "letta_stream_cancels", "Letta run cancels from the cancel queue, by result.", ["result"], registry=reg
        )
        for outcome in OUTCOMES:  # every series shown from the start, at 0
            self._ended.labels(outcome)
        for result in CANCEL_RESULTS:
            self._cancels.labels(result)
        self._active.set(0)
        self._detached.set(0)
        self._running.set(0)
        self.refused = Tally(self._refused, lambda: self._read("letta_stream_turns_refused_total"))
        """A turn was refused because its agent was busy (409)."""
        self.resumed = Tally(self._resumed, lambda: self._read("letta_stream_streams_resumed_total"))
        """A stream was resumed from a ``Last-Event-ID``."""
        self.stopped = Tally(self._stops, lambda: self._read("letta_stream_stops_total"))
        """A turn was stopped by its client (``POST /chat/cancel``)."""

    # -- counting -------------------------------------------------------------------------

    def start(self) -> None:
        """A stream started."""
        self._active.inc()
        self._started.inc()

    def end(self, outcome: str) -> None:
        """A stream ended: ``finished``, ``cancelled`` or ``errored``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown stream outcome {outcome!r}")
        self._active.dec()
        self._ended.labels(outcome).inc()

    def first_event(self, seconds: float) -> None:
        """A stream sent its first event ``seconds`` after the request."""
        self._ttfe.observe(seconds)

    def detached(self, delta: int) -> None:
        """+1 when a turn detaches from its client, -1 when it is adopted, expires or finishes."""
        self._detached.inc(delta)

    def running(self, delta: int) -> None:
        """+1 when this process starts running a turn, -1 when it stops (ended, lost or handed off)."""
        self._running.inc(delta)

    def cancel(self, result: str) -> None:
        """The cancel queue ``sent`` a run's cancel, or it ``failed``, or it was ``dropped`` (queue full)."""
        if result not in CANCEL_RESULTS:
            raise ValueError(f"unknown cancel result {result!r}")
        self._cancels.labels(result).inc()

    # -- reading ----------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The exposition (text format 0.0.4) and its content type; every worker's in multiprocess mode."""
        return generate_latest(self._collecting()), CONTENT_TYPE_PLAIN_0_0_4

    def _collecting(self) -> CollectorRegistry:
        if self.registry is not None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry

    def _read(self, name: str, labels: dict[str, str] | None = None) -> int:
        value = self._collecting().get_sample_value(name, labels)
        return int(value or 0)

    @property
    def active(self) -> int:
        """Streams open now."""
        return self._read("letta_stream_active_streams")

    @property
    def started(self) -> int:
        return self._read("letta_stream_streams_started_total")

    @property
    def ended(self) -> dict[str, int]:
        """Streams ended so far, by outcome."""
        return {o: self._read("letta_stream_streams_ended_total", {"outcome": o}) for o in OUTCOMES}

    @property
    def running_turns(self) -> int:
        return self._read("letta_stream_running_turns")

    @property
    def detached_turns(self) -> int:
        return self._read("letta_stream_detached_turns")

    @property
    def cancels(self) -> dict[str, int]:
        """The cancel queue's results so far."""
        return {r: self._read("letta_stream_cancels_total", {"result": r}) for r in CANCEL_RESULTS}
