"""The daemon's CT watch: one background thread polling the logs every `[ct] interval`, apart
from the tick (a slow log never delays a switch; every request has net's total deadline, and
a pass `[ct] pass_budget` in all)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .watch import LogResult, Watch

log = logging.getLogger(__name__)

__all__ = ["WatchJob"]


class WatchJob:
    def __init__(self, watch: Watch, *, interval: float,
                 on_poll: Callable[[list[LogResult]], None] | None = None,
                 active: Callable[[], bool] = lambda: True) -> None:
        """`active`: asked before each pass; False skips it (a fleet controller that is not
        the leader: one controller watches the logs for the fleet)."""
        self.watch, self.interval, self.on_poll, self.active = watch, interval, on_poll, active
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ct-watch", daemon=True)

    def start(self) -> WatchJob:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.active():
                self._stop.wait(min(self.interval, 10.0))  # asked again soon: may lead then
                continue
            try:
                results = self.watch.poll()
                self.polls += 1
                if self.on_poll is not None:
                    self.on_poll(results)
            except Exception:  # the watch never stops the daemon; the next poll retries
                log.exception("CT watch pass failed")
            self._stop.wait(self.interval)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the current pass (it ends within `[ct] pass_budget`)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
