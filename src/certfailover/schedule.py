"""When each check is due: per (key, signal) next-due times in a heap, jitter, per-CA backoff.

Pure: no I/O and no clock of its own; every method takes `now`. Randomness comes from a
`random.Random` passed in, so a seeded one makes a run reproducible.

Signals and how their next due time is found after a check (`done(..., next_hint=...)`),
with the shipped defaults:

    signal  next_hint (from the daemon)             next check                            jitter
    crl     earliest nextUpdate of the CRLs used    every `crl` (5 min: a conditional      none
                                                    revalidation, 304 when unchanged);
                                                    at the hint when that is sooner
    ocsp    the response's nextUpdate               half-way to the hint, at most `ocsp`   yes
                                                    (1 h); every `ocsp` without a hint
    ari     now + Retry-After                       at the hint; every `ari` (6 h)          yes
                                                    without one
    trust   next date a root program acts           every `trust` (1 d), or sooner at      yes
                                                    the hint
    expiry  the certificate's next own moment       exactly at max(now, hint), at most      none
            (renewal point, switch margin before    `maximum` later; every `expiry` (1 d)
            notAfter, notAfter)                     without a hint

Network signals (crl, ocsp, ari, trust) are clamped to [minimum, maximum] (1 min .. 1 d):
`minimum` keeps a tiny or past hint (a stale CRL, Retry-After: 0) from hammering a CA. Expiry
is local and its hint is an exact moment: no minimum, no jitter; a hint at or before `now` is
due at the next tick (never in the same one: `due()` re-arms what it returns).

Jitter (up to `jitter` x delay, at most `max_jitter`) only ever delays, and spreads a fleet's
OCSP / ARI / trust checks over time. CRL checks get none: the CRL cache makes one request per
CRL URL for all the certificates due in one tick, so keeping a shard's certificates in step
keeps it at one conditional request per `crl` period; and with the daemon ticking every
5 minutes, 5 min + jitter would miss a tick and double the period. A tick does O(k log n) work
for k due items out of n: a thousand healthy sites cost almost nothing.
"""

from __future__ import annotations

import heapq
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .backoff import doubling

__all__ = [
    "SIGNALS",
    "Alert",
    "BackoffState",
    "CABackoff",
    "Intervals",
    "Scheduler",
    "parse_duration",
]

SIGNALS: tuple[str, ...] = ("crl", "ocsp", "ari", "trust", "expiry")
_NO_JITTER = frozenset({"crl", "expiry"})  # see the module docstring

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | float) -> timedelta:
    """ "90s", "15m", "6h", "1d", "1h30m", or a number of seconds. ValueError when malformed."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"negative duration: {text!r}")
        return timedelta(seconds=text)
    s = text.strip().lower() if isinstance(text, str) else ""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos and s[pos:m.start()].strip():
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 15m, 6h, 1d, 1h30m)")
    return timedelta(seconds=total)


def _aware(ts: datetime, what: str) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got {ts!r}")
    return ts


@dataclass(frozen=True)
class Intervals:
    """All knobs of the schedule; every one can be overridden from the `[schedule]` table.

    Keys (durations as "5m" / "6h" / seconds; jitter and backoff_factor are numbers):
    crl (5m), ocsp (1h), ari (6h), trust (1d), expiry (1d), minimum (1m), maximum (1d),
    retry (15m), jitter (0.1), max_jitter (1h), backoff_base (1m), backoff_cap (6h),
    backoff_factor (2.0), ca_unreachable_after (1h), signal_unknown_after (24h).
    The defaults used to be crl = 6h, ocsp = 12h, minimum = 5m; setting those gives the old
    behaviour back (a revocation published on a CRL then stays unseen for up to ~6.6 hours).
    """

    crl: timedelta = timedelta(minutes=5)  # CRL revalidation period (sooner at nextUpdate)
    ocsp: timedelta = timedelta(hours=1)  # at most; sooner at half an OCSP response's validity
    ari: timedelta = timedelta(hours=6)  # when the CA sent no Retry-After
    trust: timedelta = timedelta(days=1)
    expiry: timedelta = timedelta(days=1)  # without a hint; a hint is an exact moment
    minimum: timedelta = timedelta(minutes=1)  # network signals: never sooner after a check
    maximum: timedelta = timedelta(days=1)  # never later after a check
    retry: timedelta = timedelta(minutes=15)  # a due item never reported done comes back
    jitter: float = 0.1  # fraction of the delay added at random
    max_jitter: timedelta = timedelta(hours=1)
    backoff_base: timedelta = timedelta(minutes=1)  # first wait after a CA error
    backoff_cap: timedelta = timedelta(hours=6)
    backoff_factor: float = 2.0
    ca_unreachable_after: timedelta = timedelta(hours=1)  # then one `ca_unreachable` alert
    signal_unknown_after: timedelta = timedelta(hours=24)  # then one `signal_unknown` alert

    def __post_init__(self) -> None:
        zero = timedelta(0)
        if not zero < self.minimum <= self.maximum:
            raise ValueError("intervals: need 0 < minimum <= maximum")
        for name in (*SIGNALS, "retry", "backoff_base", "backoff_cap", "max_jitter",
                     "ca_unreachable_after", "signal_unknown_after"):
            if getattr(self, name) < zero:
                raise ValueError(f"intervals: {name} must not be negative")
        if self.retry <= zero or self.backoff_base <= zero or self.expiry <= zero:
            raise ValueError("intervals: retry, expiry and backoff_base must be positive")
        if self.backoff_cap < self.backoff_base:
            raise ValueError("intervals: backoff_cap must be >= backoff_base")
        if not 0 <= self.jitter <= 1:
            raise ValueError("intervals: jitter is a fraction between 0 and 1")
        if self.backoff_factor < 1:
            raise ValueError("intervals: backoff_factor must be >= 1")

    def every(self, signal: str) -> timedelta:
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}: expected one of {', '.join(SIGNALS)}")
        value: timedelta = getattr(self, signal)
        return value


@dataclass(frozen=True)
class Alert:
    """A condition that has lasted past its threshold; raised once per streak."""

    kind: str  # "ca_unreachable" or "signal_unknown" (notify event kinds)
    subject: str  # the CA name, or the schedule key (site / cert id)
    signal: str | None  # for signal_unknown: crl, ocsp, ari, trust, expiry
    since: datetime


@dataclass(frozen=True)
class BackoffState:
    failures: int
    since: datetime  # first failure of the current streak
    until: datetime  # blocked before this moment


class CABackoff:
    """Per-CA exponential backoff: base, base*factor, ... capped at cap, plus jitter."""

    def __init__(self, intervals: Intervals, rng: random.Random) -> None:
        self._iv = intervals
        self._rng = rng
        self._state: dict[str, BackoffState] = {}

    def failure(self, ca: str, now: datetime) -> datetime:
        """Record an error talking to `ca`; returns the time before which it is blocked."""
        _aware(now, "now")
        old = self._state.get(ca)
        n = 1 if old is None else old.failures + 1
        cap = self._iv.backoff_cap.total_seconds()
        delay = doubling(self._iv.backoff_base.total_seconds(), cap, n, self._iv.backoff_factor)
        delay = min(cap, delay * (1 + self._rng.uniform(0, self._iv.jitter)))
        until = now + timedelta(seconds=delay)
        self._state[ca] = BackoffState(n, now if old is None else old.since, until)
        return until

    def success(self, ca: str) -> None:
        self._state.pop(ca, None)

    def blocked(self, ca: str, now: datetime) -> bool:
        st = self._state.get(ca)
        return st is not None and _aware(now, "now") < st.until

    def state(self, ca: str) -> BackoffState | None:
        """The current failure streak (None when the CA's last call succeeded)."""
        return self._state.get(ca)

    def items(self) -> list[tuple[str, BackoffState]]:
        return list(self._state.items())

    def failing_since(self, ca: str) -> datetime | None:
        """Start of the failure streak: alert `ca_unreachable` when now - this > threshold."""
        st = self._state.get(ca)
        return None if st is None else st.since


class Scheduler:
    """Next-due times for (key, signal) pairs, plus per-CA backoff (see module docstring)."""

    def __init__(self, *, rng: random.Random, intervals: Intervals | None = None) -> None:
        self.intervals = intervals or Intervals()
        self._rng = rng
        self._heap: list[tuple[datetime, int, str, str]] = []
        self._next: dict[tuple[str, str], datetime] = {}
        self._seq = 0
        self.backoff = CABackoff(self.intervals, rng)
        self._unknown: dict[tuple[str, str], datetime] = {}
        self._alerted: set[Alert] = set()

    # ------------------------------------------------------------------ membership
    def add(self, key: str, now: datetime, signals: Iterable[str] = SIGNALS) -> None:
        """Schedule `key` for `signals`, due at once; pairs already scheduled keep their time."""
        _aware(now, "now")
        for signal in signals:
            self.intervals.every(signal)  # validates the name
            if (key, signal) not in self._next:
                self._push(key, signal, now)

    def remove(self, key: str) -> None:
        for signal in SIGNALS:
            self._next.pop((key, signal), None)
            self._unknown.pop((key, signal), None)
        self._maybe_compact()

    def __len__(self) -> int:
        return len(self._next)

    def __contains__(self, item: object) -> bool:
        return item in self._next

    def when(self, key: str, signal: str) -> datetime | None:
        return self._next.get((key, signal))

    def next_due(self) -> datetime | None:
        """Earliest due time: the daemon may sleep until then."""
        self._drop_stale_top()
        return self._heap[0][0] if self._heap else None

    # ------------------------------------------------------------------ the tick
    def due(self, now: datetime) -> list[tuple[str, str]]:
        """(key, signal) pairs due at `now`, earliest first.

        Each is provisionally re-armed at now + retry, so a check that crashes before
        `done()` is retried rather than forgotten.
        """
        _aware(now, "now")
        out: list[tuple[str, str]] = []
        taken: set[tuple[str, str]] = set()
        retry_at = now + self.intervals.retry
        while self._heap and self._heap[0][0] <= now:
            when, _, key, signal = heapq.heappop(self._heap)
            if self._next.get((key, signal)) != when or (key, signal) in taken:
                continue  # stale entry (rescheduled or removed), or an older twin of this time
            taken.add((key, signal))
            out.append((key, signal))
        for key, signal in out:
            self._push(key, signal, retry_at)
        return out

    def done(self, key: str, signal: str, now: datetime, *,
             next_hint: datetime | None = None, known: bool = True) -> datetime:
        """Record a finished check and schedule the next one; returns the new due time.

        `known=False` says the signal could not be obtained (fetch failed, no answer): once
        that has lasted `signal_unknown_after`, `alerts()` reports it.
        """
        _aware(now, "now")
        if next_hint is not None:
            _aware(next_hint, "next_hint")
        if (key, signal) not in self._next:
            raise KeyError(f"{key!r}/{signal!r} is not scheduled")
        if known:
            self._unknown.pop((key, signal), None)
        else:
            self._unknown.setdefault((key, signal), now)
        delay = self._delay(signal, now, next_hint)
        when = now + delay
        if signal not in _NO_JITTER:
            when += self._jitter(delay)
        self._push(key, signal, when)
        return when

    def postpone(self, key: str, signal: str, until: datetime) -> None:
        """Move a pair to `until` exactly (e.g. its CA is in backoff until then)."""
        if (key, signal) not in self._next:
            raise KeyError(f"{key!r}/{signal!r} is not scheduled")
        self._push(key, signal, _aware(until, "until"))

    # ------------------------------------------------------------------ per-CA backoff
    def failure(self, ca: str, now: datetime) -> datetime:
        return self.backoff.failure(ca, now)

    def success(self, ca: str) -> None:
        self.backoff.success(ca)

    def blocked(self, ca: str, now: datetime) -> bool:
        return self.backoff.blocked(ca, now)

    def unknown_since(self, key: str, signal: str) -> datetime | None:
        return self._unknown.get((key, signal))

    def alerts(self, now: datetime) -> list[Alert]:
        """Conditions that crossed their threshold since the last call (once per streak):
        a CA failing for `ca_unreachable_after`, a signal unknown for `signal_unknown_after`."""
        _aware(now, "now")
        current: list[Alert] = [
            Alert("ca_unreachable", ca, None, st.since) for ca, st in self.backoff.items()
            if now - st.since >= self.intervals.ca_unreachable_after
        ] + [
            Alert("signal_unknown", key, signal, since)
            for (key, signal), since in self._unknown.items()
            if now - since >= self.intervals.signal_unknown_after
        ]
        out = [a for a in current if a not in self._alerted]
        self._alerted = set(current)  # a streak (identified by its start) alerts once
        return sorted(out, key=lambda a: (a.since, a.kind, a.subject, a.signal or ""))

    # ------------------------------------------------------------------ internals
    def _delay(self, signal: str, now: datetime, hint: datetime | None) -> timedelta:
        iv = self.intervals
        every = iv.every(signal)
        if signal == "expiry":  # local, exact: no minimum (a past hint: the next tick)
            delay = every if hint is None else max(timedelta(0), hint - now)
            return min(iv.maximum, delay)
        if hint is None:
            delay = every
        elif signal == "ocsp":  # half-way to nextUpdate, at most every `ocsp`
            delay = min(every, (hint - now) / 2)
        elif signal == "ari":  # Retry-After is the CA's word
            delay = hint - now
        else:  # crl, trust: the regular interval, or sooner when a hint asks for it
            delay = min(every, hint - now)
        return max(iv.minimum, min(iv.maximum, delay))

    def _jitter(self, delay: timedelta) -> timedelta:
        iv = self.intervals
        span = min(delay * iv.jitter, iv.max_jitter).total_seconds()
        return timedelta(seconds=self._rng.uniform(0, span)) if span > 0 else timedelta(0)

    def _push(self, key: str, signal: str, when: datetime) -> None:
        self._next[(key, signal)] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key, signal))
        self._maybe_compact()

    def _drop_stale_top(self) -> None:
        while self._heap:
            when, _, key, signal = self._heap[0]
            if self._next.get((key, signal)) == when:
                return
            heapq.heappop(self._heap)

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._next) + 64:
            live = {}
            for when, seq, key, signal in self._heap:
                if self._next.get((key, signal)) == when:
                    live[(key, signal)] = (when, seq, key, signal)  # newest seq wins on ties
            self._heap = list(live.values())
            heapq.heapify(self._heap)
