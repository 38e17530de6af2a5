from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from certfailover.model import Event
from certfailover.notify.background import Background

T = datetime(2026, 1, 1, tzinfo=UTC)


def ev(i: int) -> Event:
    return Event(T, f"s{i}", "failover", f"event {i}")


def test_enqueue_does_not_wait_for_a_slow_receiver_and_keeps_order() -> None:
    seen: list[str] = []
    gate = threading.Event()

    def slow(event: Event) -> None:
        gate.wait(5)
        seen.append(event.site)

    bg = Background(slow)
    start = time.perf_counter()
    for i in range(5):
        bg(ev(i))
    assert time.perf_counter() - start < 0.5
    assert seen == []
    gate.set()
    assert bg.close(timeout=5)
    assert seen == ["s0", "s1", "s2", "s3", "s4"]


def test_failing_target_does_not_kill_the_worker() -> None:
    seen: list[str] = []

    def flaky(event: Event) -> None:
        if event.site == "s1":
            raise RuntimeError("receiver down")
        seen.append(event.site)

    bg = Background(flaky)
    for i in range(3):
        bg(ev(i))
    assert bg.close(timeout=5)
    assert seen == ["s0", "s2"]
    with pytest.raises(RuntimeError, match="closed"):
        bg(ev(9))


def test_full_queue_drops_and_counts() -> None:
    gate = threading.Event()
    delivered: list[str] = []

    def blocked(event: Event) -> None:
        gate.wait(5)
        delivered.append(event.site)

    bg = Background(blocked, maxsize=2)
    bg(ev(0))
    deadline = time.monotonic() + 5
    while bg._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker has taken event 0 and waits on the gate
    bg(ev(1))
    bg(ev(2))
    bg(ev(3))  # queue (2) is full
    assert bg.dropped == 1
    gate.set()
    assert bg.close(timeout=5)
    assert delivered == ["s0", "s1", "s2"]
