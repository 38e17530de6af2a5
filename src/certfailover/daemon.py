"""The daemon loop: tick every `interval` seconds; SIGTERM/SIGINT stop after the current step."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from .engine import Engine, TickReport

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, engine: Engine, *, interval: float,
                 on_tick: Callable[[TickReport], None] | None = None) -> None:
        self.engine, self.interval, self.on_tick = engine, interval, on_tick
        self.stop_event = threading.Event()
        self.ticks = 0

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        self.stop_event.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)

    def run(self, *, once: bool = False, max_ticks: int | None = None) -> int:
        failures = 0
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                report = self.engine.tick()
                failures = 0
                if self.on_tick:
                    self.on_tick(report)
            except Exception:  # the daemon survives anything one tick throws, and backs off
                failures += 1
                log.exception("tick failed (%d in a row)", failures)
            self.ticks += 1
            if once or (max_ticks is not None and self.ticks >= max_ticks):
                break
            delay = self.interval * (2 ** min(failures, 5) if failures else 1)
            self.stop_event.wait(max(0.0, delay - (time.monotonic() - started)))
        return 0


