"""A clock the test moves (a `model.Clock`: a callable returning an aware UTC datetime)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]


class FakeClock:
    """Stands still until told otherwise::

        clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
        engine = Engine(..., clock=clock)
        clock.advance(hours=6)          # or clock.advance(timedelta(hours=6))
        clock.set(datetime(2026, 6, 1, tzinfo=UTC))

    Without a start it starts at the real time now (whole seconds), so certificates made
    with real validity periods line up with it. Safe to read from the engine's threads.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise ValueError(f"FakeClock needs an aware datetime, not {start!r}")
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    @property
    def now(self) -> datetime:
        return self()

    @now.setter
    def now(self, when: datetime) -> None:
        self.set(when)

    def set(self, when: datetime) -> datetime:
        if when.tzinfo is None:
            raise ValueError(f"FakeClock needs an aware datetime, not {when!r}")
        with self._lock:
            self._now = when
        return when

    def advance(self, delta: timedelta | None = None, /, **parts: float) -> datetime:
        """Move forward by `delta` or by timedelta keyword parts (`hours=2`); returns the new
        time. Time never goes back this way (a negative step is an error: use `set`)."""
        step = (delta or timedelta()) + timedelta(**parts)
        if step < timedelta():
            raise ValueError(f"advance({step}) would move the clock back; use set()")
        with self._lock:
            self._now += step
            return self._now
