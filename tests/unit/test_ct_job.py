"""The CT watch's thread: polls every interval; a fleet controller that is not the leader skips
its passes (one controller watches the logs for the fleet) and starts when it leads."""

from __future__ import annotations

import threading
import time
from typing import Any

from certfailover.ct.job import WatchJob


class CountingWatch:
    def __init__(self) -> None:
        self.polls = 0

    def poll(self) -> list[Any]:
        self.polls += 1
        return []


def _until(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_job_that_is_not_active_does_not_poll_until_it_is() -> None:
    leading = threading.Event()
    watch = CountingWatch()
    job = WatchJob(watch, interval=0.02, active=leading.is_set).start()  # type: ignore[arg-type]
    try:
        time.sleep(0.2)
        assert watch.polls == 0, "not the leader: no pass"
        leading.set()
        assert _until(lambda: watch.polls >= 2), "the leader polls every interval"
        leading.clear()
        time.sleep(0.1)
        seen = watch.polls
        time.sleep(0.2)
        assert watch.polls == seen, "leadership lost: passes stop"
    finally:
        job.close()


def test_a_job_polls_by_default() -> None:
    watch = CountingWatch()
    job = WatchJob(watch, interval=0.02).start()  # type: ignore[arg-type]
    try:
        assert _until(lambda: watch.polls >= 2)
    finally:
        job.close()
