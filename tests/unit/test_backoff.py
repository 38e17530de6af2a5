"""Backoff: after failures with one target a key waits base, 2 x base, ... up to cap; another
target or a success starts afresh; keys are apart."""

from __future__ import annotations

import pytest

from certfailover.backoff import Backoff, doubling

T0 = 1_000.0


def test_the_wait_doubles_per_failure_in_a_row_up_to_the_cap() -> None:
    b: Backoff[str] = Backoff(30, 300)
    waits = [b.failed("www", "/b", T0).at - T0 for _ in range(6)]
    assert waits == [30, 60, 120, 240, 300, 300]
    w = b.waiting("www", "/b", T0)
    assert w is not None and (w.failures, w.at) == (6, T0 + 300)
    assert b.waiting("www", "/b", T0 + 300) is None, "due at its time"


def test_a_success_or_another_target_starts_afresh() -> None:
    b: Backoff[str] = Backoff(30, 300)
    b.failed("www", "/b", T0)
    b.failed("www", "/b", T0)
    w = b.failed("www", "/c", T0)
    assert (w.failures, w.at) == (1, T0 + 30), "another target: its first failure"
    assert b.waiting("www", "/b", T0) is None, "only the last target waits"
    b.forget("www")
    assert b.waiting("www", "/c", T0) is None and b.next_retry(T0) is None
    assert b.failed("www", "/c", T0).failures == 1


def test_the_callers_note_is_made_from_the_count_and_the_delay() -> None:
    b: Backoff[tuple[str, int]] = Backoff(5, 300)
    b.failed(("api", 1), "x", T0)
    w = b.failed(("api", 1), "x", T0, lambda n, d: f"attempt {n}, next in {d:g} s")
    assert w.note == "attempt 2, next in 10 s"
    assert b.waiting(("api", 1), "x", T0) == w


def test_next_retry_is_the_earliest_wait_and_may_leave_out_the_overdue() -> None:
    b: Backoff[str] = Backoff(30, 300)
    assert b.next_retry(T0) is None
    b.failed("a", "/x", T0)
    b.failed("b", "/y", T0 - 20)  # due in 10 s
    assert b.next_retry(T0) == pytest.approx(10.0)
    assert b.next_retry(T0 + 31) == 0.0, "one already over: at once"
    assert b.next_retry(T0 + 31, overdue=False) is None, "nothing ahead"
    assert b.next_retry(T0 + 15, overdue=False) == pytest.approx(15.0)


def test_keys_are_apart() -> None:
    b: Backoff[str] = Backoff(30, 300)
    b.failed("a", "/x", T0)
    assert b.waiting("b", "/x", T0) is None


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_bad_bounds_are_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap)


def test_doubling_is_the_one_rule_with_its_factor_and_cap() -> None:
    assert [doubling(5, 300, n) for n in range(1, 9)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert doubling(60, 6 * 3600, 3, factor=3.0) == 540
    assert doubling(1, 60, 10_000) == 60, "no overflow however long the streak"
    assert doubling(0, 60, 4) == 0 and doubling(5, 300, 0) == 5
