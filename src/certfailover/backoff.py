"""Tried again later, not at every pass: after a failure with one target (a certificate, a
record), a key (a site, a record) waits base, 2 x base, 4 x base, ... up to cap before that
target is tried again; another target, or a success, starts afresh. Used for switches that
were rolled back (the engine, `[daemon] switch_backoff`), a fleet agent's switches and its
prefetched records. Times are seconds on the caller's clock (monotonic or epoch); in memory:
a restarted process tries at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Backoff", "Wait", "doubling"]

K = TypeVar("K", bound=Hashable)


def doubling(base: float, cap: float, failures: int, factor: float = 2.0) -> float:
    """The wait after `failures` failures in a row: base, base x factor, ... at most cap (the
    one rule of every backoff here: orders, CAs, notifications, switches, agents' records)."""
    return float(min(cap, base * factor ** min(max(failures, 1) - 1, 64)))


@dataclass(frozen=True)
class Wait:
    target: str
    failures: int  # in a row, with this target
    at: float  # may be tried again from then
    note: str = ""  # what the caller said of it (appended to its error)


class Backoff(Generic[K]):
    def __init__(self, base: float, cap: float) -> None:
        if base <= 0 or cap < base:
            raise ValueError("base must be > 0 and cap >= base")
        self.base, self.cap = base, cap
        self._waits: dict[K, Wait] = {}
        self._lock = threading.Lock()

    def waiting(self, key: K, target: str, now: float) -> Wait | None:
        """The wait in force for `key` with `target` (None: it may be tried now)."""
        with self._lock:
            w = self._waits.get(key)
        return w if w is not None and w.target == target and now < w.at else None

    def failed(self, key: K, target: str, now: float,
               note: Callable[[int, float], str] | None = None) -> Wait:
        """Record a failure; the wait it starts (`note(failures, delay)` kept with it)."""
        with self._lock:
            prev = self._waits.get(key)
            n = prev.failures + 1 if prev is not None and prev.target == target else 1
            delay = doubling(self.base, self.cap, n)
            w = Wait(target, n, now + delay, note(n, delay) if note is not None else "")
            self._waits[key] = w
        return w

    def forget(self, key: K) -> None:
        """A success (or nothing left to try): the key starts afresh."""
        with self._lock:
            self._waits.pop(key, None)

    def next_retry(self, now: float, *, overdue: bool = True) -> float | None:
        """Seconds until the earliest wait ends: 0 for one already over (unless not
        `overdue`: only the waits still ahead count); None: none."""
        with self._lock:
            ats = [w.at for w in self._waits.values() if overdue or w.at > now]
        return max(0.0, min(ats) - now) if ats else None
