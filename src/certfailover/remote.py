"""Checks that wait on other parties (revocation responders, CAs' ARI), run apart from the
daemon's tick: a responder that is slow, hangs or drips makes its data late, never a switch.

The daemon hands each site's due network checks to one of a few daemon threads and goes on;
when they end, their findings are in the store and the daemon decides that site again at once.
A certificate has at most one network check in flight.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .model import Health

log = logging.getLogger(__name__)

__all__ = ["CheckJob", "CheckResult", "RemoteChecks"]


@dataclass(frozen=True)
class CheckJob:
    site: str
    run: Mapping[str, frozenset[str]]  # cert id -> check names
    due: tuple[tuple[str, str], ...]  # the scheduler's (cert id, signal) pairs it answers
    started: datetime


@dataclass(frozen=True)
class CheckResult:
    job: CheckJob
    health: Mapping[str, Health]  # empty when the check crashed


class RemoteChecks:
    """A few daemon threads running CheckJobs; `on_done` hears of each result."""

    def __init__(self, check: Callable[[CheckJob], Mapping[str, Health]], *, threads: int,
                 on_done: Callable[[CheckResult], None]) -> None:
        self._check, self._on_done = check, on_done
        self._queue: queue.Queue[CheckJob | None] = queue.Queue()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, name=f"checks-{i}", daemon=True)
                         for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    def in_flight(self) -> set[str]:
        """Certificate ids with a network check queued or running."""
        with self._lock:
            return set(self._busy)

    def submit(self, job: CheckJob) -> None:
        with self._lock:
            self._busy.update(job.run)
        self._queue.put(job)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                health = self._check(job)
            except Exception:
                log.exception("network checks of %s crashed", job.site)
                health = {}
            with self._lock:
                self._busy.difference_update(job.run)
            try:
                self._on_done(CheckResult(job, health))
            except Exception:
                log.exception("network check completion handler failed")

    def close(self) -> None:
        """Stop taking jobs; running checks end at their own fetch deadlines (daemon threads)."""
        for _ in self._threads:
            self._queue.put(None)
