"""Switches that failed (rolled back, or not deployed) are tried again after a doubling wait,
not on every tick: a server that keeps serving the old certificate, or whose config test
fails, is not reloaded twice per tick while it stays broken, nor is the same alert sent again
at every tick. Keyed by site and the material the switch pointed at: another target, or a
success, starts afresh. In memory: a restarted daemon tries at once."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["SwitchHold"]


@dataclass(frozen=True)
class _Failed:
    target: str
    count: int
    retry_at: datetime


class SwitchHold:
    def __init__(self, base: timedelta, cap: timedelta) -> None:
        if base <= timedelta(0) or cap < base:
            raise ValueError("base must be > 0 and cap >= base")
        self.base, self.cap = base, cap
        self._failed: dict[str, _Failed] = {}
        self._lock = threading.Lock()

    def until(self, site: str, target: str, now: datetime) -> datetime | None:
        """When a switch of `site` to `target` may be tried again; None: now."""
        with self._lock:
            f = self._failed.get(site)
        if f is None or f.target != target or now >= f.retry_at:
            return None
        return f.retry_at

    def failed(self, site: str, target: str, now: datetime) -> tuple[int, timedelta]:
        """Record a failed switch: (failures in a row to this target, wait before the next)."""
        with self._lock:
            f = self._failed.get(site)
            count = f.count + 1 if f is not None and f.target == target else 1
            wait = min(self.cap, self.base * 2 ** min(count - 1, 32))
            self._failed[site] = _Failed(target, count, now + wait)
        return count, wait

    def succeeded(self, site: str) -> None:
        with self._lock:
            self._failed.pop(site, None)

    def next_retry(self, now: datetime) -> float | None:
        """Seconds until the earliest held switch may be tried again (None: none held)."""
        with self._lock:
            ahead = [f.retry_at for f in self._failed.values() if f.retry_at > now]
        return min(ahead).timestamp() - now.timestamp() if ahead else None
