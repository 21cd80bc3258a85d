"""StreamMetrics: the API the service counts through, one registry per app, and every worker's counts in one exposition."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from app.cancels import RunCanceller
from app.metrics import CANCEL_RESULTS, OUTCOMES, StreamMetrics


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition parsed: (sample name, sorted labels) → value."""
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(body: bytes, name: str, **labels: str) -> float:
    return samples(body)[(name, tuple(sorted(labels.items())))]


def test_every_count_shows_under_its_name() -> None:
    m = StreamMetrics()
    m.start()
    m.start()
    m.end("finished")
    m.first_event(0.07)
    m.refused()
    m.resumed()
    m.resumed()
    m.stopped()
    m.detached(+1)
    m.detached(+1)
    m.detached(-1)
    m.cancel("sent")
    m.cancel("dropped")
    body, content_type = m.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert value(body, "letta_stream_active_streams") == 1
    assert value(body, "letta_stream_streams_started_total") == 2
    assert value(body, "letta_stream_streams_ended_total", outcome="finished") == 1
    assert value(body, "letta_stream_streams_ended_total", outcome="cancelled") == 0
    assert value(body, "letta_stream_turns_refused_total") == 1
    assert value(body, "letta_stream_streams_resumed_total") == 2
    assert value(body, "letta_stream_stops_total") == 1
    assert value(body, "letta_stream_detached_turns") == 1
    assert value(body, "letta_stream_cancels_total", result="sent") == 1
    assert value(body, "letta_stream_cancels_total", result="failed") == 0
    assert value(body, "letta_stream_cancels_total", result="dropped") == 1
    assert value(body, "letta_stream_time_to_first_event_seconds_bucket", le="0.05") == 0
    assert value(body, "letta_stream_time_to_first_event_seconds_bucket", le="0.1") == 1
    assert value(body, "letta_stream_time_to_first_event_seconds_bucket", le="+Inf") == 1
    assert value(body, "letta_stream_time_to_first_event_seconds_count") == 1
    assert value(body, "letta_stream_time_to_first_event_seconds_sum") == pytest.approx(0.07)
    assert b"_created" not in body
    # read back, as the tests of streams do
    assert m.active == 1
    assert m.started == 2
    assert m.ended == {"finished": 1, "cancelled": 0, "errored": 0}
    assert int(m.refused) == 1
    assert int(m.resumed) == 2
    assert int(m.stopped) == 1
    assert m.detached_turns == 1
    assert m.cancels == {"sent": 1, "failed": 0, "dropped": 1}


def test_all_series_are_there_at_zero() -> None:
    body, _ = StreamMetrics().render()
    for outcome in OUTCOMES:
        assert value(body, "letta_stream_streams_ended_total", outcome=outcome) == 0
    for result in CANCEL_RESULTS:
        assert value(body, "letta_stream_cancels_total", result=result) == 0
    assert value(body, "letta_stream_active_streams") == 0
    assert value(body, "letta_stream_detached_turns") == 0
    buckets = [le for (name, labels) in samples(body) if name.endswith("_bucket") for _, le in labels]
    assert buckets == ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf"]


def test_apps_in_one_process_count_apart() -> None:
    first, second = StreamMetrics(), StreamMetrics()
    first.start()
    first.stopped()
    assert first.active == 1
    assert second.active == 0
    assert int(first.stopped) == 1
    assert int(second.stopped) == 0
    assert value(second.render()[0], "letta_stream_streams_started_total") == 0


def test_unknown_labels_are_refused() -> None:
    m = StreamMetrics()
    with pytest.raises(ValueError, match="outcome"):
        m.end("vanished")
    with pytest.raises(ValueError, match="cancel result"):
        m.cancel("maybe")


def test_the_cancel_queue_counts_through_the_metrics() -> None:
    m = StreamMetrics()
    canceller = RunCanceller(client=None, metrics=m)  # type: ignore[arg-type]  # never sends
    canceller._queue[0].close()
    canceller.submit("agent-1", "run-1")
    assert canceller.dropped == 1
    assert m.cancels == {"sent": 0, "failed": 0, "dropped": 1}


def _worker(path: str, streams: int, counted: Event, stay: Event | None) -> None:
    m = StreamMetrics()
    assert m.multiprocess
    for _ in range(streams):
        m.start()
        m.first_event(0.3)
    m.end("cancelled")
    m.cancel("failed")
    m.resumed()
    m.detached(+1)
    counted.set()
    if stay is not None:
        stay.wait(30)


def test_multiprocess_mode_sums_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Set before the workers start: prometheus_client picks its mode when it is imported.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    ctx = multiprocessing.get_context("spawn")
    counted, release, gone_counted = ctx.Event(), ctx.Event(), ctx.Event()  # kept until the workers read them
    gone = ctx.Process(target=_worker, args=(str(tmp_path), 2, gone_counted, None))
    alive = ctx.Process(target=_worker, args=(str(tmp_path), 3, counted, release))
    gone.start()
    gone.join(60)
    assert gone.exitcode == 0
    alive.start()
    try:
        assert counted.wait(60)
        mark_process_dead(gone.pid, str(tmp_path))  # what the launcher does when a worker exits
        reader = ctx.Process(target=_render, args=(str(tmp_path),))
        reader.start()
        reader.join(60)
        assert reader.exitcode == 0
        body = (tmp_path / "render.txt").read_bytes()
    finally:
        release.set()
        alive.join(60)
    assert value(body, "letta_stream_streams_started_total") == 5  # counters: every worker that ran
    assert value(body, "letta_stream_streams_ended_total", outcome="cancelled") == 2
    assert value(body, "letta_stream_streams_resumed_total") == 2
    assert value(body, "letta_stream_cancels_total", result="failed") == 2
    assert value(body, "letta_stream_time_to_first_event_seconds_count") == 5
    assert value(body, "letta_stream_time_to_first_event_seconds_bucket", le="0.5") == 5
    # gauges: the workers alive now (the gone one had 1 stream open and 1 turn detached)
    assert value(body, "letta_stream_active_streams") == 2
    assert value(body, "letta_stream_detached_turns") == 1


def _render(path: str) -> None:
    body, _ = StreamMetrics().render()
    Path(path, "render.txt").write_bytes(body)


def test_multiprocess_mode_needs_its_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        StreamMetrics()
