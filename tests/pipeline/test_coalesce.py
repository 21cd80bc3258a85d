"""The coalescer's rules, with the clock given by hand."""

from __future__ import annotations

from pipeline.coalesce import Coalescer
from pipeline.events import Done, Reasoning, Status, Text


def test_deltas_within_the_window_become_one_event() -> None:
    co = Coalescer(window=0.05)
    co.push(Text("a"), 0.0)
    co.push(Text("b"), 0.01)
    assert co.take(0.02) == []
    assert co.take(0.05) == [Text("ab")]
    assert co.empty


def test_window_counts_from_the_first_held_delta() -> None:
    co = Coalescer(window=0.05)
    co.push(Text("a"), 0.0)
    assert co.deadline == 0.05
    co.push(Text("b"), 0.04)
    assert co.deadline == 0.05


def test_non_text_event_releases_held_text_first_and_is_not_delayed() -> None:
    co = Coalescer(window=10)
    co.push(Text("a"), 0.0)
    co.push(Status("Using x..."), 0.001)
    assert co.take(0.001) == [Text("a"), Status("Using x...")]


def test_reasoning_and_text_are_never_merged_and_order_is_kept() -> None:
    co = Coalescer(window=10)
    for event in (Reasoning("r1"), Reasoning("r2"), Text("t1"), Reasoning("r3"), Text("t2")):
        co.push(event, 0.0)
    assert co.flush() == [Reasoning("r1r2"), Text("t1"), Reasoning("r3"), Text("t2")]


def test_size_releases_before_the_window() -> None:
    co = Coalescer(window=10, max_chars=4)
    co.push(Text("ab"), 0.0)
    co.push(Text("cd"), 0.0)
    co.push(Text("e"), 0.0)
    assert co.take(0.0) == [Text("abcd")]
    assert co.flush() == [Text("e")]


def test_full_bounds_backlog_and_characters() -> None:
    co = Coalescer(window=10, max_backlog=2, max_buffered_chars=100)
    co.push(Status("a"), 0)
    assert not co.full
    co.push(Status("b"), 0)
    assert co.full
    co.take(0)
    assert not co.full
    co.push(Text("x" * 100), 0)
    assert co.full


def test_flush_releases_everything_in_order() -> None:
    co = Coalescer()
    co.push(Text("a"), 0)
    co.push(Done(), 0)
    assert co.flush() == [Text("a"), Done()]
    assert co.flush() == []
