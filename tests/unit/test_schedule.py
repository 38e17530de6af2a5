from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from certfailover.schedule import SIGNALS, Alert, Intervals, Scheduler, parse_duration
from certfailover.testing import FakeClock

T0 = datetime(2026, 3, 19, 0, 0, tzinfo=UTC)
NO_JITTER = Intervals(jitter=0)
H = timedelta(hours=1)


def sched(intervals: Intervals = NO_JITTER, seed: int = 1) -> Scheduler:
    return Scheduler(rng=random.Random(seed), intervals=intervals)


def test_new_keys_are_due_at_once_then_rearmed_for_retry() -> None:
    clock = FakeClock(T0)
    s = sched()
    s.add("a.example", clock())
    assert sorted(s.due(clock())) == sorted(("a.example", sig) for sig in SIGNALS)
    assert s.due(clock()) == []
    assert s.due(clock.advance(timedelta(minutes=14))) == []
    # never reported done: comes back after `retry` (15 min), not forgotten
    assert len(s.due(clock.advance(timedelta(minutes=1)))) == 5


def test_add_keeps_existing_times_and_validates_signals() -> None:
    s = sched()
    s.add("a", T0, ["crl"])
    s.due(T0)
    s.done("a", "crl", T0)
    s.add("a", T0, ["crl", "trust"])
    assert s.when("a", "crl") == T0 + timedelta(minutes=5)
    assert s.when("a", "trust") == T0
    with pytest.raises(ValueError, match="unknown signal 'hpkp'"):
        s.add("a", T0, ["hpkp"])


def test_shipped_defaults_act_on_revocation_within_minutes() -> None:
    iv = Intervals()
    assert iv.crl == timedelta(minutes=5) and iv.ocsp == H and iv.minimum == timedelta(minutes=1)
    assert iv.ari == 6 * H and iv.maximum == timedelta(days=1)


def test_crl_every_5_minutes_with_shipped_defaults_whatever_next_update() -> None:
    for seed in range(20):  # default jitter on: the CRL signal gets none
        s = sched(Intervals(), seed=seed)
        s.add("c", T0, ["crl"])
        s.due(T0)
        five = T0 + timedelta(minutes=5)
        assert s.done("c", "crl", T0, next_hint=T0 + timedelta(days=7)) == five
        assert s.done("c", "crl", T0) == five  # no nextUpdate known (fetch failed)
        assert s.due(five - timedelta(microseconds=1)) == []
        assert s.due(five) == [("c", "crl")]


def test_crl_next_update_earlier_than_5_minutes_wins() -> None:
    s = sched(Intervals(), seed=7)
    s.add("c", T0, ["crl"])
    s.due(T0)
    assert s.done("c", "crl", T0, next_hint=T0 + timedelta(minutes=2)) == (
        T0 + timedelta(minutes=2))


def test_minimum_still_floors_network_signals() -> None:
    s = sched()  # shipped minimum: 1 minute
    s.add("n", T0, ["crl", "ocsp", "ari", "trust"])
    s.due(T0)
    floor = T0 + timedelta(minutes=1)
    assert s.done("n", "crl", T0, next_hint=T0 + timedelta(seconds=10)) == floor
    assert s.done("n", "crl", T0, next_hint=T0 - H) == floor  # stale CRL
    assert s.done("n", "ocsp", T0, next_hint=T0 + timedelta(seconds=30)) == floor
    assert s.done("n", "ari", T0, next_hint=T0) == floor  # Retry-After: 0
    assert s.done("n", "trust", T0, next_hint=T0 + timedelta(seconds=1)) == floor
    big = sched(Intervals(jitter=0, minimum=timedelta(minutes=10)))
    big.add("n", T0, ["crl"])
    big.due(T0)
    assert big.done("n", "crl", T0) == T0 + timedelta(minutes=10)


def test_crl_due_at_every_tick_of_a_5_minute_daemon() -> None:
    """The daemon ticks every 300 s: 5 min + jitter would slip to every other tick."""
    s = sched(Intervals(), seed=5)
    for i in range(100):
        s.add(f"k{i}", T0, ["crl"])
    now = T0
    for tick in range(12):
        due = s.due(now)
        assert len(due) == 100, f"tick {tick}: {len(due)} due"
        for key, sig in due:
            s.done(key, sig, now, next_hint=now + timedelta(days=7))
        now += timedelta(seconds=300)


def test_expiry_hint_is_exact_no_jitter_no_minimum() -> None:
    for seed in range(20):
        s = sched(Intervals(jitter=1.0, max_jitter=timedelta(days=1)), seed=seed)
        s.add("e", T0, ["expiry"])
        s.due(T0)
        for hint in (T0 + timedelta(seconds=10), T0 + 2 * H,
                     T0 + timedelta(hours=23, minutes=59, seconds=59, microseconds=7)):
            assert s.done("e", "expiry", T0, next_hint=hint) == hint
        assert s.done("e", "expiry", T0) == T0 + timedelta(days=1)  # no hint: daily, exact
        far = T0 + timedelta(days=9)
        assert s.done("e", "expiry", T0, next_hint=far) == T0 + timedelta(days=1)  # maximum


def test_expiry_hint_in_the_past_is_due_at_the_next_tick_not_in_a_loop() -> None:
    s = sched()
    s.add("e", T0, ["expiry"])
    assert s.due(T0) == [("e", "expiry")]
    assert s.done("e", "expiry", T0, next_hint=T0 - H) == T0
    assert s.done("e", "expiry", T0, next_hint=T0) == T0
    assert s.next_due() == T0
    later = T0 + timedelta(minutes=5)
    assert s.due(later) == [("e", "expiry")]  # the next tick, once
    assert s.due(later) == []


def test_expiry_at_not_after_fires_at_the_first_tick_after_it() -> None:
    not_after = T0 + timedelta(hours=3, seconds=17)
    s = sched(Intervals())
    s.add("e", T0, ["expiry"])
    now = T0
    fired = []
    while now < T0 + 4 * H:
        for key, sig in s.due(now):
            fired.append(now)
            s.done(key, sig, now, next_hint=not_after if not_after > now else None)
        now += timedelta(minutes=5)
    assert fired[0] == T0 and fired[1] == T0 + timedelta(hours=3, minutes=5)  # not a day later


def test_ocsp_at_half_validity_at_most_every_ocsp() -> None:
    s = sched(Intervals(jitter=0, ocsp=timedelta(days=7), maximum=timedelta(days=7)))
    s.add("o", T0, ["ocsp"])
    s.due(T0)
    assert s.done("o", "ocsp", T0, next_hint=T0 + timedelta(days=4)) == T0 + timedelta(days=2)
    assert s.done("o", "ocsp", T0, next_hint=T0 + 10 * H) == T0 + 5 * H
    assert s.done("o", "ocsp", T0) == T0 + timedelta(days=7)
    d = sched()  # shipped: at most 1 h
    d.add("o", T0, ["ocsp"])
    d.due(T0)
    assert d.done("o", "ocsp", T0, next_hint=T0 + timedelta(days=4)) == T0 + H
    assert d.done("o", "ocsp", T0, next_hint=T0 + H) == T0 + timedelta(minutes=30)
    assert d.done("o", "ocsp", T0) == T0 + H


def test_ari_at_retry_after_with_floor() -> None:
    s = sched()
    s.add("r", T0, ["ari"])
    s.due(T0)
    assert s.done("r", "ari", T0, next_hint=T0 + timedelta(minutes=30)) == (
        T0 + timedelta(minutes=30))
    assert s.done("r", "ari", T0, next_hint=T0 + timedelta(seconds=10)) == (
        T0 + timedelta(minutes=1))
    assert s.done("r", "ari", T0) == T0 + 6 * H


def test_trust_and_expiry_daily_or_sooner_on_hint() -> None:
    s = sched()
    s.add("e", T0, ["trust", "expiry"])
    s.due(T0)
    assert s.done("e", "trust", T0) == T0 + timedelta(days=1)
    assert s.done("e", "expiry", T0, next_hint=T0 + 2 * H) == T0 + 2 * H
    assert s.done("e", "expiry", T0, next_hint=T0 + timedelta(days=9)) == T0 + timedelta(days=1)


def test_intervals_are_overridable() -> None:
    s = sched(Intervals(jitter=0, trust=timedelta(hours=4), crl=timedelta(minutes=30)))
    s.add("k", T0, ["trust", "crl"])
    s.due(T0)
    assert s.done("k", "trust", T0) == T0 + 4 * H
    assert s.done("k", "crl", T0) == T0 + timedelta(minutes=30)


def test_jitter_is_seeded_positive_and_bounded() -> None:
    def times(seed: int) -> list[datetime]:
        s = sched(Intervals(), seed=seed)
        out = []
        for i in range(200):
            s.add(f"k{i}", T0, ["trust"])
        s.due(T0)
        for i in range(200):
            out.append(s.done(f"k{i}", "trust", T0))
        return out

    a, b, c = times(42), times(42), times(43)
    assert a == b and a != c
    day = T0 + timedelta(days=1)
    assert all(day <= t <= day + H for t in a)  # 10% of a day, capped at max_jitter 1h
    assert len(set(a)) > 150  # spread out, not a thundering herd


def test_simulated_days_with_moving_clock() -> None:
    clock = FakeClock(T0)
    s = sched(Intervals(), seed=3)
    keys = [f"site{i}.example" for i in range(50)]
    for k in keys:
        s.add(k, clock())
    runs: Counter[str] = Counter()
    last: dict[tuple[str, str], datetime] = {}
    end = T0 + timedelta(days=3)
    while clock() < end:
        for key, signal in s.due(clock()):
            prev = last.get((key, signal))
            assert prev is None or clock() - prev >= timedelta(minutes=5)
            last[(key, signal)] = clock()
            runs[signal] += 1
            hint = {"crl": clock() + 2 * H, "ocsp": clock() + 8 * H}.get(signal)
            s.done(key, signal, clock(), next_hint=hint)
        clock.advance(timedelta(minutes=1))
    # 3 days: trust/expiry once a day -> 3 runs per key; crl every 5 min (a nextUpdate 2 h
    # away changes nothing); ocsp every 1 h (+ <= 6 min jitter; half-way to nextUpdate is 4 h)
    assert runs["trust"] == runs["expiry"] == 3 * len(keys)
    assert runs["crl"] == 3 * 24 * 12 * len(keys)
    assert 65 * len(keys) <= runs["ocsp"] <= 72 * len(keys)
    assert runs["ari"] == 12 * len(keys)  # every 6h (+<=36 min jitter): 0,6..66h


def test_remove_and_unknown_pairs() -> None:
    s = sched()
    s.add("a", T0)
    s.add("b", T0)
    s.remove("a")
    assert len(s) == 5 and ("a", "crl") not in s and ("b", "crl") in s
    assert {k for k, _ in s.due(T0)} == {"b"}
    with pytest.raises(KeyError):
        s.done("a", "crl", T0)


def test_next_due_skips_stale_entries() -> None:
    s = sched()
    assert s.next_due() is None
    s.add("a", T0, ["trust"])
    s.due(T0)
    s.done("a", "trust", T0)
    assert s.next_due() == T0 + timedelta(days=1)
    s.postpone("a", "trust", T0 + 2 * H)
    assert s.next_due() == T0 + 2 * H


def test_heap_stays_compact_under_churn() -> None:
    s = sched()
    s.add("a", T0)
    for i in range(10_000):
        s.done("a", SIGNALS[i % 5], T0)
    assert len(s._heap) <= 2 * len(s) + 65


def test_idle_tick_is_cheap_for_thousands_of_sites() -> None:
    s = sched(Intervals())
    for i in range(10_000):
        s.add(f"s{i}", T0)
    assert len(s.due(T0)) == 50_000
    for i in range(10_000):
        for sig in SIGNALS:
            s.done(f"s{i}", sig, T0)
    start = time.perf_counter()
    for minute in range(1, 1001):
        assert s.due(T0 + timedelta(minutes=minute % 5)) == []
    assert time.perf_counter() - start < 1.0  # a scan of 50k entries per tick would take >10 s


def test_naive_datetimes_are_refused() -> None:
    s = sched()
    with pytest.raises(ValueError, match="timezone-aware"):
        s.add("a", datetime(2026, 1, 1))
    s.add("a", T0)
    with pytest.raises(ValueError, match="next_hint"):
        s.done("a", "crl", T0, next_hint=datetime(2026, 1, 2))


def test_ca_backoff_doubles_to_cap_and_resets() -> None:
    clock = FakeClock(T0)
    s = sched(Intervals(jitter=0, backoff_base=timedelta(minutes=1),
                        backoff_cap=timedelta(minutes=10)))
    waits = []
    for _ in range(6):
        until = s.failure("ca1", clock())
        waits.append(until - clock())
        clock.now = until
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 8, 10, 10)]
    assert s.backoff.failing_since("ca1") == T0
    assert s.blocked("ca1", clock.now - timedelta(seconds=1))
    assert not s.blocked("ca1", clock.now)
    assert not s.blocked("ca2", clock.now)
    s.success("ca1")
    assert s.backoff.failing_since("ca1") is None
    assert s.failure("ca1", clock()) == clock() + timedelta(minutes=1)


def test_backoff_jitter_stays_under_cap() -> None:
    s = sched(Intervals(jitter=0.5, backoff_cap=timedelta(minutes=5)), seed=9)
    for _ in range(20):
        assert s.failure("ca", T0) <= T0 + timedelta(minutes=5)
    state = s.backoff.state("ca")
    assert state is not None and state.failures == 20


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("6h", 21600), ("1d", 86400), ("1h30m", 5400),
    ("1h 30m", 5400), ("2w", 1209600), ("250ms", 0.25), (300, 300), (1.5, 1.5),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "6", "h", "6x", "abc6h", "6h foo", "-5s", -5])
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_ca_unreachable_alert_once_per_streak() -> None:
    clock = FakeClock(T0)
    s = sched(Intervals(jitter=0, ca_unreachable_after=timedelta(minutes=30)))
    s.failure("ca1", clock())
    assert s.alerts(clock()) == []
    s.failure("ca1", clock.advance(timedelta(minutes=20)))
    assert s.alerts(clock()) == []
    clock.advance(timedelta(minutes=10))
    assert s.alerts(clock()) == [Alert("ca_unreachable", "ca1", None, T0)]
    s.failure("ca1", clock.advance(timedelta(minutes=10)))
    assert s.alerts(clock()) == []  # same streak: no repeat
    s.success("ca1")
    s.failure("ca1", clock.advance(H))
    later = clock()
    assert s.alerts(clock.advance(timedelta(minutes=30))) == [
        Alert("ca_unreachable", "ca1", None, later)]
    s.backoff.success("ca1")  # ended behind the scheduler's back: still re-arms
    s.failure("ca1", clock())
    assert s.alerts(clock.advance(H)) != []


def test_signal_unknown_alert_after_threshold() -> None:
    clock = FakeClock(T0)
    s = sched(Intervals(jitter=0, signal_unknown_after=timedelta(hours=12)))
    s.add("site.example", clock(), ["crl", "ocsp"])
    s.due(clock())
    s.done("site.example", "crl", clock(), known=False)
    s.done("site.example", "ocsp", clock())
    assert s.unknown_since("site.example", "crl") == T0
    s.done("site.example", "crl", clock.advance(6 * H), known=False)
    assert s.unknown_since("site.example", "crl") == T0  # the streak keeps its start
    assert s.alerts(clock()) == []
    assert s.alerts(clock.advance(6 * H)) == [
        Alert("signal_unknown", "site.example", "crl", T0)]
    assert s.alerts(clock.advance(H)) == []
    s.done("site.example", "crl", clock())  # known again
    assert s.unknown_since("site.example", "crl") is None
    s.done("site.example", "crl", clock(), known=False)
    assert s.alerts(clock.advance(12 * H))[0].since == clock() - 12 * H
    s.remove("site.example")
    assert s.unknown_since("site.example", "crl") is None
