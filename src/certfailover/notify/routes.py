"""Isolated delivery: one bounded queue and one worker thread per notifier.

`Routes(dispatchers)` is the engine's `notify` port. Calling it never blocks: the event is put
on the queue of every notifier whose filter wants it. Each notifier's worker delivers its queue
in order; one delivery (one event to one notifier) is bounded by the notifier's `limits`
(base.Limits): every attempt ends at `timeout` (the attempt runs in its own thread and is
abandoned at its deadline if the notifier does not stop by itself: a receiver that drips its
answer cannot hold the worker), at most `retries` more attempts with backoff, and the whole
delivery ends by `limits.total`. A notifier that hangs only delays its own queue.

A full queue drops its OLDEST event (the newest says most about the site now), logged with the
running count; every event is in the store's event history anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from ..model import Event
from .base import Limits, Notifier, NotifyError
from .dispatch import DELIVERED, DROPPED, FAILED, PENDING, Delivery, Dispatcher, notifier_name

log = logging.getLogger(__name__)

#: queued events per notifier before the oldest is dropped
QUEUE_SIZE = 100
#: how long past an attempt's deadline the worker waits for it to stop by itself
GRACE = 0.5
#: outcomes kept per notifier for flush() (the oldest are forgotten first)
OUTCOMES_KEPT = 1000
#: limits of a notifier that has none (a plain `send(event)`)
DEFAULT_LIMITS = Limits(timeout=30.0, retries=0, backoff=1.0)


def limits_of(notifier: Notifier) -> Limits:
    limits = getattr(notifier, "limits", None)
    return limits if isinstance(limits, Limits) else DEFAULT_LIMITS


class Lane:
    """One notifier's queue and worker thread (started with the first event)."""

    def __init__(self, dispatcher: Dispatcher, notifier: Notifier, *,
                 maxsize: int = QUEUE_SIZE, grace: float = GRACE) -> None:
        if maxsize < 1:
            raise ValueError("queue size must be >= 1")
        self.dispatcher = dispatcher
        self.notifier = notifier
        self.name = notifier_name(notifier)
        self.limits = limits_of(notifier)
        self.maxsize = maxsize
        self.grace = grace
        self.dropped = 0  # queue full (oldest dropped) or closed
        self.abandoned = 0  # attempts still running when their deadline passed
        self.lost_at_close = 0  # still queued when close's deadline passed
        self._cond = threading.Condition()
        self._queue: deque[Event] = deque()
        self._current: tuple[Event, float] | None = None  # being delivered, since
        self._outcomes: deque[Delivery] = deque(maxlen=OUTCOMES_KEPT)
        self._thread: threading.Thread | None = None
        self._closing_at: float | None = None  # monotonic: give up everything after this
        self._closed = False
        self._stopped = False
        self._wake = threading.Event()  # interrupts a backoff wait when closing

    # -- producer side ----------------------------------------------------------------------
    def put(self, event: Event) -> None:
        with self._cond:
            if self._closed:
                self._drop(event, "notifications are closed")
                return
            if len(self._queue) >= self.maxsize:
                old = self._queue.popleft()
                self._drop(old, f"queue full ({self.maxsize}): dropped the oldest event")
            self._queue.append(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"certfailover-notify {self.name}")
                self._thread.start()
            self._cond.notify_all()

    def _drop(self, event: Event, why: str) -> None:  # with self._cond held
        self.dropped += 1
        log.error("notify %s: %s (%s event for %s; %d dropped so far)",
                  self.name, why, event.kind, event.site, self.dropped)
        self._outcomes.append(Delivery(self.name, False, why, DROPPED, event.kind, event.site))

    # -- worker -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue or self._past_close():
                    for ev in self._queue:
                        self.lost_at_close += 1
                        self._drop(ev, "not delivered before close")
                    self._queue.clear()
                    self._stopped = True
                    self._cond.notify_all()
                    return
                event = self._queue.popleft()
                self._current = (event, time.monotonic())
            try:
                outcome = self._deliver(event)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
                outcome = Delivery(self.name, False, f"{type(exc).__name__}: {exc}", FAILED,
                                   event.kind, event.site)
            with self._cond:
                self._current = None
                self._outcomes.append(outcome)
                self._cond.notify_all()

    def _past_close(self) -> bool:
        return self._closing_at is not None and time.monotonic() >= self._closing_at

    def _end(self, delivery_end: float) -> float:
        closing = self._closing_at
        return delivery_end if closing is None else min(delivery_end, closing)

    def _deliver(self, event: Event) -> Delivery:
        lim = self.limits
        start = time.monotonic()
        end = start + lim.total
        if lim.deadline is None:  # the sum of the attempts: each may take its grace too
            end += (lim.retries + 1) * self.grace
        attempts = 0
        last = "deadline passed before the first attempt"
        while attempts <= lim.retries:
            remaining = self._end(end) - time.monotonic()
            if remaining <= 0:
                last += " (delivery deadline reached)"
                break
            attempts += 1
            error, retryable = self._attempt(event, min(lim.timeout, remaining))
            if error is None:
                return Delivery(self.name, True, None, DELIVERED, event.kind, event.site,
                                attempts, round(time.monotonic() - start, 3))
            last = error
            if not retryable or attempts > lim.retries:
                break
            delay = lim.delay(attempts)
            if time.monotonic() + delay >= self._end(end):
                last += " (no time left for another attempt)"
                break
            log.info("notify %s: attempt %d/%d for %s on %s failed (%s), retrying in %.2fs",
                     self.name, attempts, lim.retries + 1, event.kind, event.site, error, delay)
            self._wake.wait(delay)
        log.warning("notify %s failed for %s event on %s after %d attempt(s): %s",
                    self.name, event.kind, event.site, attempts, last)
        return Delivery(self.name, False, last, FAILED, event.kind, event.site, attempts,
                        round(time.monotonic() - start, 3))

    def _attempt(self, event: Event, timeout: float) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (error, retryable). Ends by timeout + grace."""
        box: dict[str, Any] = {}
        attempt = getattr(self.notifier, "attempt", None)

        def run() -> None:
            try:
                if callable(attempt):
                    attempt(event, timeout)
                else:
                    self.notifier.send(event)
            except NotifyError as exc:
                box["error"] = (str(exc), exc.retryable)
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                # NotifyError messages are built without secrets; others get the type name
                # and message, never a traceback whose causes could repeat a URL token
                box["error"] = (f"{type(exc).__name__}: {exc}", isinstance(exc, OSError))
            else:
                box["ok"] = True

        t = threading.Thread(target=run, daemon=True,
                             name=f"certfailover-notify-attempt {self.name}")
        t.start()
        t.join(timeout + self.grace)
        if t.is_alive():
            self.abandoned += 1
            log.warning("notify %s: no answer within %.1fs for %s on %s: attempt abandoned",
                        self.name, timeout, event.kind, event.site)
            return f"{self.name}: no answer within {timeout:g}s (abandoned)", True
        if box.get("ok"):
            return None, False
        error, retryable = box.get("error", ("attempt ended without a result", True))
        return str(error), bool(retryable)

    # -- reports and shutdown ---------------------------------------------------------------
    def idle(self) -> bool:  # with self._cond held
        return not self._queue and self._current is None

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (self._current is not None)

    def wait_idle(self, until: float) -> bool:
        with self._cond:
            while not self.idle() and not self._stopped:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return self.idle()

    def report(self) -> list[Delivery]:
        """Outcomes since the last report, then what is still pending (left queued)."""
        now = time.monotonic()
        with self._cond:
            out = list(self._outcomes)
            self._outcomes.clear()
            if self._current is not None:
                ev, since = self._current
                out.append(Delivery(self.name, False, "still being delivered", PENDING,
                                    ev.kind, ev.site, 0, round(now - since, 3)))
            out += [Delivery(self.name, False, "queued", PENDING, ev.kind, ev.site)
                    for ev in self._queue]
        return out

    def begin_close(self, until: float) -> None:
        with self._cond:
            self._closed = True
            self._closing_at = until if self._closing_at is None else min(until,
                                                                          self._closing_at)
            self._cond.notify_all()
        if time.monotonic() >= until:
            self._wake.set()

    def join(self, until: float) -> bool:
        t = self._thread
        if t is None:
            return True
        while t.is_alive():
            left = until - time.monotonic()
            if left <= 0:
                self._wake.set()  # a backoff wait must not outlive close
                return False
            t.join(min(left, 0.1))
            if time.monotonic() >= (self._closing_at or float("inf")):
                self._wake.set()
        return True


class Routes:
    """Several Dispatchers (one per notifier, each with its own filter) behind one callable,
    each notifier with its own queue and worker thread.

    - `routes(event)`: never blocks; enqueues for every notifier whose filter wants it;
    - `flush(timeout) -> list[Delivery]`: waits up to `timeout` for every queue to empty, then
      reports what was delivered, failed or dropped since the last flush, and what is still
      pending (which stays queued);
    - `close(timeout) -> bool`: stops accepting events, delivers what it can within `timeout`
      and stops the workers; True when everything queued was dealt with in time. Call
      `flush()` afterwards for the outcomes;
    - `send(event)`: delivers synchronously through the dispatchers (bypasses the queues, for
      tools and tests only: it waits for every notifier).
    """

    def __init__(self, dispatchers: Sequence[Dispatcher], *, queue_size: int = QUEUE_SIZE,
                 grace: float = GRACE) -> None:
        self.dispatchers = tuple(dispatchers)
        self.lanes = tuple(Lane(d, n, maxsize=queue_size, grace=grace)
                           for d in self.dispatchers for n in d.notifiers)

    def __len__(self) -> int:
        return len(self.lanes)

    def __call__(self, event: Event) -> None:
        for lane in self.lanes:
            if lane.dispatcher.wants(event):
                lane.put(event)

    def send(self, event: Event) -> tuple[Delivery, ...]:
        return tuple(d for disp in self.dispatchers for d in disp.send(event))

    @property
    def dropped(self) -> int:
        return sum(lane.dropped for lane in self.lanes)

    def pending(self) -> int:
        """Events queued or being delivered, over every notifier."""
        return sum(lane.pending() for lane in self.lanes)

    def flush(self, timeout: float) -> list[Delivery]:
        until = time.monotonic() + max(0.0, timeout)
        for lane in self.lanes:
            lane.wait_idle(until)
        return [d for lane in self.lanes for d in lane.report()]

    def close(self, timeout: float = 30.0) -> bool:
        until = time.monotonic() + max(0.0, timeout)
        for lane in self.lanes:
            lane.begin_close(until)
        stopped = [lane.join(until + GRACE) for lane in self.lanes]
        return all(stopped) and not any(lane.lost_at_close for lane in self.lanes)


def summary(deliveries: Iterable[Delivery]) -> dict[str, dict[str, int]]:
    """Per notifier: how many deliveries ended in each status."""
    out: dict[str, dict[str, int]] = {}
    for d in deliveries:
        counts = out.setdefault(d.notifier, {DELIVERED: 0, FAILED: 0, PENDING: 0, DROPPED: 0})
        counts[d.status] = counts.get(d.status, 0) + 1
    return out
