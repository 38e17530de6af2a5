"""SwitchHold: a failed switch waits base, 2 x base, ... up to cap; per site and target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certfailover.switchhold import SwitchHold

T0 = datetime(2026, 12, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def test_the_wait_doubles_per_failure_in_a_row_up_to_the_cap() -> None:
    h = SwitchHold(30 * S, 300 * S)
    waits = [h.failed("www", "/b", T0)[1] for _ in range(6)]
    assert waits == [30 * S, 60 * S, 120 * S, 240 * S, 300 * S, 300 * S]
    assert h.until("www", "/b", T0) == T0 + 300 * S
    assert h.until("www", "/b", T0 + 300 * S) is None, "due at its time"


def test_a_success_or_another_target_starts_afresh() -> None:
    h = SwitchHold(30 * S, 300 * S)
    h.failed("www", "/b", T0)
    h.failed("www", "/b", T0)
    assert h.failed("www", "/c", T0) == (1, 30 * S), "another target: its first failure"
    assert h.until("www", "/b", T0) is None, "only the last target is held"
    h.succeeded("www")
    assert h.until("www", "/c", T0) is None and h.next_retry(T0) is None
    assert h.failed("www", "/c", T0) == (1, 30 * S)


def test_next_retry_is_the_earliest_wait_ahead() -> None:
    h = SwitchHold(30 * S, 300 * S)
    assert h.next_retry(T0) is None
    h.failed("a", "/x", T0)
    h.failed("b", "/y", T0 - 20 * S)  # due in 10 s
    assert h.next_retry(T0) == pytest.approx(10.0)
    assert h.next_retry(T0 + 31 * S) is None, "nothing ahead"


def test_sites_are_held_apart() -> None:
    h = SwitchHold(30 * S, 300 * S)
    h.failed("a", "/x", T0)
    assert h.until("b", "/x", T0) is None


@pytest.mark.parametrize(("base", "cap"), [(0 * S, S), (-S, S), (2 * S, S)])
def test_bad_bounds_are_refused(base: timedelta, cap: timedelta) -> None:
    with pytest.raises(ValueError):
        SwitchHold(base, cap)
