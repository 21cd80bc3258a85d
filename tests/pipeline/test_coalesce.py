"""The coalescer's rules, with the clock given by hand."""

from __future__ import annotations

import itertools

import pytest

from pipeline.coalesce import Coalescer
from pipeline.events import Done, Reasoning, Status, Text


def test_trailing_only_deltas_within_the_window_become_one_event() -> None:
    co = Coalescer(window=0.05, leading=False)
    co.push(Text("a"), 0.0)
    co.push(Text("b"), 0.01)
    assert co.take(0.02) == []
    assert co.take(0.05) == [Text("ab")]
    assert co.empty


def test_trailing_only_window_counts_from_the_first_held_delta() -> None:
    co = Coalescer(window=0.05, leading=False)
    co.push(Text("a"), 0.0)
    assert co.deadline == 0.05
    co.push(Text("b"), 0.04)
    assert co.deadline == 0.05


def test_non_text_event_releases_held_text_first_and_is_not_delayed() -> None:
    co = Coalescer(window=10)
    co.push(Text("a"), 0.0)
    co.push(Status("Using x..."), 0.001)
    assert co.take(0.001) == [Text("a"), Status("Using x...")]


@pytest.mark.parametrize("leading", [True, False])
def test_reasoning_and_text_are_never_merged_and_order_is_kept(leading: bool) -> None:
    co = Coalescer(window=10, leading=leading)
    for event in (Reasoning("r1"), Reasoning("r2"), Text("t1"), Reasoning("r3"), Text("t2")):
        co.push(event, 0.0)
    head = [Reasoning("r1"), Reasoning("r2")] if leading else [Reasoning("r1r2")]  # r1 opened the first frame
    assert co.flush() == [*head, Text("t1"), Reasoning("r3"), Text("t2")]


def test_size_releases_before_the_window() -> None:
    co = Coalescer(window=10, max_chars=4, leading=False)
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


# ---------------------------------------------------------------- leading edge (the default)


def test_the_first_delta_after_a_pause_is_ready_at_once() -> None:
    co = Coalescer(window=0.05)
    co.push(Text("a"), 1.0)
    assert co.take(1.0) == [Text("a")]  # trailing-only would hold it until 1.05
    assert co.empty


def test_after_a_leading_frame_deltas_merge_until_one_window_after_it() -> None:
    co = Coalescer(window=0.05)
    co.push(Text("a"), 0.0)
    assert co.take(0.0) == [Text("a")]
    co.push(Text("b"), 0.01)
    co.push(Text("c"), 0.03)
    assert co.deadline == 0.05  # one window after the frame, not after "b"
    assert co.take(0.049) == []
    assert co.take(0.05) == [Text("bc")]


def test_steady_deltas_become_frames_exactly_a_window_apart() -> None:
    co = Coalescer(window=0.05)
    sent: list[tuple[int, str]] = []
    for ms in range(2100):  # a token every 20 ms for 2 s; the writer wakes 1 ms after each deadline (a timer is late)
        now = ms / 1000
        if ms % 20 == 0 and ms < 2000:
            co.push(Text(f"{ms // 20} "), now)
        deadline = co.deadline
        if co.has_ready or (deadline is not None and now >= deadline + 0.001):
            sent += [(ms, e.content) for e in co.take(now)]  # type: ignore[attr-defined]
    assert co.flush() == []
    assert "".join(text for _, text in sent) == "".join(f"{i} " for i in range(100))
    assert sent[0] == (0, "0 ")  # the first token at once
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sent)]
    assert all(49 <= gap <= 52 for gap in gaps)  # one frame per window (to the ms; the clock is a float)
    assert abs(sum(gaps) / len(gaps) - 50) < 0.5  # and the timer's lateness does not add up (it would give 51)


def test_a_pause_of_a_window_opens_a_new_leading_frame() -> None:
    co = Coalescer(window=0.05)
    co.push(Text("a"), 0.0)
    assert co.take(0.0) == [Text("a")]
    co.push(Text("b"), 0.2)
    assert co.take(0.2) == [Text("b")]


def test_a_writer_held_up_longer_than_a_window_does_not_burst_to_catch_up() -> None:
    co = Coalescer(window=0.05)
    co.push(Text("a"), 0.0)
    co.take(0.0)
    co.push(Text("b"), 0.01)
    assert co.take(0.5) == [Text("b")]  # the writer came late
    co.push(Text("c"), 0.51)
    assert co.deadline == pytest.approx(0.55)  # a window after the late frame, not after the missed deadline


@pytest.mark.parametrize("leading", [True, False])
def test_a_terminal_event_releases_held_text_at_once(leading: bool) -> None:
    co = Coalescer(window=10, leading=leading)
    co.push(Text("a"), 0.0)
    co.push(Text("b"), 0.001)
    co.push(Done(), 0.002)
    out = co.take(0.002)
    assert "".join(e.content for e in out[:-1]) == "ab"  # type: ignore[attr-defined]
    assert out[-1] == Done()
    assert co.empty


def test_a_status_does_not_delay_the_next_text_frame() -> None:
    co = Coalescer(window=0.05)
    co.push(Status("Thinking..."), 0.0)
    co.push(Text("a"), 0.001)
    assert co.take(0.001) == [Status("Thinking..."), Text("a")]


def test_a_zero_window_merges_what_piles_up_for_a_slow_writer() -> None:
    co = Coalescer(window=0.0)
    co.push(Text("a"), 0.0)
    co.push(Text("b"), 0.0)
    assert co.take(0.0) == [Text("ab")]


def test_passes_only_what_would_go_out_at_once() -> None:
    co = Coalescer(window=0.05)
    assert co.passes(Text("a"), 0.0)  # a leading edge, nothing held
    co.passed(Text("a"), 0.0)
    assert not co.passes(Text("b"), 0.01)  # within the window of the frame just sent
    assert co.passes(Status("s"), 0.01)
    co.push(Text("b"), 0.01)
    assert not co.passes(Status("s"), 0.02)  # text is held: the status goes behind it, through push
    assert not Coalescer(window=0.05, leading=False).passes(Text("a"), 0.0)
