"""The issuance budget (pure) and the background order workers."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from certfailover.issuance import RATE_WINDOW, Budget, CAOrders, Job, Outcome, Workers, hold
from certfailover.model import Order

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BUDGET = Budget(max_orders=4, window=timedelta(days=7), backoff_base=timedelta(minutes=1),
                backoff_cap=timedelta(hours=6))


def order(n: int, outcome: str, *, ago: float, site: str = "www", transient: bool = False,
          took: float = 1.0) -> Order:
    started = NOW - timedelta(seconds=ago)
    finished = None if outcome == "pending" else started + timedelta(seconds=took)
    return Order(n, site, "b", started, finished, outcome, transient, f"reason {n}", None)


def test_no_history_goes_ahead() -> None:
    assert hold([], "www", "b", NOW, BUDGET) is None


def test_one_order_in_flight_per_site_and_ca() -> None:
    h = hold([order(1, "pending", ago=5)], "www", "b", NOW, BUDGET)
    assert h is not None and h.kind == "in_flight"
    assert hold([order(1, "pending", ago=5, site="api")], "www", "b", NOW, BUDGET) is None


def test_budget_caps_orders_per_window_even_when_they_succeed() -> None:
    done = [order(n, "issued", ago=86400 * n) for n in range(1, 5)]
    h = hold(done, "www", "b", NOW, BUDGET)
    assert h is not None and h.kind == "budget" and "max_orders = 4" in h.message
    assert h.until == done[-1].started + timedelta(days=7)
    assert hold(done[:3], "www", "b", NOW, BUDGET) is None
    old = [order(n, "issued", ago=86400 * (7 + n)) for n in range(1, 9)]
    assert hold(old, "www", "b", NOW, BUDGET) is None, "orders outside the window do not count"


def test_backoff_doubles_from_when_the_failure_was_known() -> None:
    # the order took 50 s to fail: the first wait (1 min) counts from its end, not its start
    one = [order(1, "unusable", ago=100, took=50)]
    h = hold(one, "www", "b", NOW, BUDGET)
    assert h is not None and h.kind == "backoff" and "unusable" in h.message
    assert h.until == NOW - timedelta(seconds=50) + timedelta(minutes=1)
    two = one + [order(2, "failed", ago=30, took=1)]
    h2 = hold(two, "www", "b", NOW, BUDGET)
    assert h2 is not None and h2.until == NOW - timedelta(seconds=29) + timedelta(minutes=2)
    assert hold(two, "www", "b", NOW + timedelta(minutes=2), BUDGET) is None


def test_a_success_ends_the_streak() -> None:
    hist = [order(1, "failed", ago=300), order(2, "issued", ago=200), order(3, "failed", ago=10)]
    h = hold(hist, "www", "b", NOW, BUDGET)
    assert h is not None and h.until == NOW - timedelta(seconds=9) + timedelta(minutes=1)


def test_a_ca_that_is_down_is_backed_off_for_every_site() -> None:
    hist = [order(1, "failed", ago=20, site="api", transient=True)]
    h = hold(hist, "www", "b", NOW, BUDGET)
    assert h is not None and h.kind == "ca_backoff" and "reason 1" in h.message
    permanent = [order(1, "failed", ago=20, site="api", transient=False)]
    assert hold(permanent, "www", "b", NOW, BUDGET) is None, "one site's bad request is its own"


def test_backoff_is_capped() -> None:
    hist = [order(n, "failed", ago=10 + n) for n in range(1, 4)]
    small = Budget(max_orders=100, backoff_base=timedelta(hours=1), backoff_cap=timedelta(hours=2))
    h = hold(hist, "www", "b", NOW, small)
    assert h is not None and h.until is not None and h.until - NOW < timedelta(hours=2)


def test_ca_rate_caps_orders_of_all_sites_in_the_last_hour() -> None:
    # ten sites ordered from b in the last hour (one an hour ago exactly: out of the window)
    hist = [order(n, "issued", ago=60 * (50 - 5 * n), site=f"s{n}") for n in range(10)]
    hist.append(order(10, "issued", ago=3600, site="old"))
    h = hold(hist, "www", "b", NOW, BUDGET, ca_rate=10)
    assert h is not None and h.kind == "ca_rate"
    assert "CA b" in h.message and "10 orders" in h.message and "max_orders_per_hour = 10" \
        in h.message
    oldest = min(o.started for o in hist if o.site != "old")
    assert h.until == oldest + RATE_WINDOW == NOW + timedelta(minutes=10)
    assert hold(hist, "www", "b", h.until, BUDGET, ca_rate=10) is None, "room again at `until`"
    assert hold(hist, "www", "b", NOW, BUDGET, ca_rate=11) is None, "below the cap: go ahead"
    assert hold(hist, "www", "b", NOW, BUDGET) is None, "no cap: no hold"


def test_ca_rate_until_when_over_the_cap() -> None:
    # another controller overshot: 12 in the hour, cap 10: three must leave, the third oldest
    hist = [order(n, "issued", ago=60 * (55 - n), site=f"s{n}") for n in range(12)]
    h = hold(hist, "www", "b", NOW, BUDGET, ca_rate=10)
    assert h is not None and h.kind == "ca_rate" and "12 orders" in h.message
    assert h.until == hist[2].started + RATE_WINDOW


def test_ca_rate_counts_failed_pending_and_queued_orders() -> None:
    hist = [order(1, "failed", ago=100, site="a"), order(2, "pending", ago=50, site="b"),
            order(3, "unusable", ago=40, site="c")]
    assert hold(hist, "www", "b", NOW, BUDGET, ca_rate=4) is None
    h = hold(CAOrders(hist, queued=1), "www", "b", NOW, BUDGET, ca_rate=4)
    assert h is not None and h.kind == "ca_rate" and "1 of them queued" in h.message
    assert h.until == hist[0].started + RATE_WINDOW
    # queued orders have not started: they leave the window last, an hour from now at least
    h2 = hold(CAOrders([], queued=3), "www", "b", NOW, BUDGET, ca_rate=3)
    assert h2 is not None and h2.until == NOW + RATE_WINDOW


def test_ca_rate_is_per_ca_and_site_holds_come_first() -> None:
    full = [order(n, "issued", ago=60 + n, site=f"s{n}") for n in range(5)]
    other = [dataclasses.replace(o, ca="c") for o in full]
    assert hold([], "www", "b", NOW, BUDGET, ca_rate=5) is None, "another CA's orders do not count"
    h = hold(other, "www", "c", NOW, BUDGET, ca_rate=5)
    assert h is not None and h.kind == "ca_rate" and "CA c" in h.message
    mine = [*full, order(9, "pending", ago=5)]
    h2 = hold(mine, "www", "b", NOW, BUDGET, ca_rate=5)
    assert h2 is not None and h2.kind == "in_flight", "the site's own order in flight says more"


def test_ca_orders_index_answers_like_the_list() -> None:
    hist = [order(1, "failed", ago=20, site="api", transient=True),
            order(2, "issued", ago=4000, site="www"), order(3, "failed", ago=70, site="www")]
    index = CAOrders(hist)
    for site in ("www", "api", "new"):
        for at in (NOW, NOW + timedelta(minutes=5)):
            assert hold(index, site, "b", at, BUDGET, ca_rate=2) == \
                hold(hist, site, "b", at, BUDGET, ca_rate=2)


def _outcome(job: Job) -> Outcome:
    return Outcome(job, True, False, NOW, "ok")


def test_workers_run_orders_apart_and_abandon_one_past_its_deadline() -> None:
    release = threading.Event()
    ended: list[Outcome] = []
    seen_cancel: list[bool] = []

    def run(job: Job, cancelled: Callable[[], bool]) -> Outcome:
        if job.ca == "hang":
            release.wait(10)
            seen_cancel.append(cancelled())
        return _outcome(job)

    def abandoned(job: Job, deadline: float) -> Outcome:
        return Outcome(job, False, True, NOW, f"abandoned after {deadline}")

    w = Workers(run, deadline=0.5, on_done=ended.append, abandoned=abandoned)
    started = time.monotonic()
    assert w.submit(Job("www", "hang")) and w.submit(Job("www", "ok"))
    assert not w.submit(Job("www", "hang")), "one order per site and CA at a time"
    deadline = time.monotonic() + 5
    while len(ended) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    took = time.monotonic() - started
    assert [o.job.ca for o in ended] == ["ok", "hang"], "the hanging CA held up nobody else"
    assert not ended[1].ok and "abandoned" in ended[1].message
    assert took < 1.5, f"the abandoned order ended at its deadline, not {took:.1f}s"
    assert w.busy() == set() and w.submit(Job("www", "hang"))
    release.set()
    deadline = time.monotonic() + 5
    while len(seen_cancel) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(seen_cancel) == [False, True], "only the late runner is told to discard"
    w.close()
