"""Orders to CAs, kept apart from the failover path.

The failover path (check -> decide -> switch -> prove) never waits for a CA. A site that needs a
new certificate gets an *order*; whether one may be sent now is decided from the store's order
history, so it survives restarts and is the same for every process sharing the store:

    in flight   one order per site and CA at a time
    budget      at most `max_orders` orders per site and CA in `window` (defaults below the
                public CAs' limits: Let's Encrypt allows 5 duplicate certificates a week)
    backoff     after failed or unusable orders for a site and CA: base, base*2, ... capped,
                counted from when the failure was known (the order's end), not from a tick
    CA backoff  after transient failures (down, hanging, 5xx) of a CA, for every site alike
    CA rate     at most `max_orders_per_hour` orders to a CA in any hour, all sites together
                (a `[[ca]]` key, default: no cap), so a mass failover does not break the CA's
                own rate limits; the orders table is shared, so every controller counts them all

`Workers` runs orders in the background, one thread per CA, each order with a hard deadline
after which its result is discarded; the daemon is told when an order ends so that the site
is decided again at once.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .backoff import doubling
from .model import Order, utcnow

log = logging.getLogger(__name__)

__all__ = ["RATE_WINDOW", "Budget", "CAOrders", "Hold", "Job", "Workers", "hold"]

#: the window of a CA's `max_orders_per_hour`
RATE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Budget:
    """How many orders a site may send to one CA, and how fast after failures."""

    max_orders: int = 4
    window: timedelta = timedelta(days=7)
    backoff_base: timedelta = timedelta(minutes=1)
    backoff_cap: timedelta = timedelta(hours=6)
    factor: float = 2.0

    def delay(self, failures: int) -> timedelta:
        return timedelta(seconds=doubling(self.backoff_base.total_seconds(),
                                          self.backoff_cap.total_seconds(), failures, self.factor))


@dataclass(frozen=True)
class Hold:
    """Why no order goes to a CA now. `kind` is stable (for "said once" checks)."""

    kind: str  # in_flight, budget, backoff, ca_backoff, ca_rate
    until: datetime | None
    message: str


def _failure_streak(orders: Sequence[Order], *, transient_only: bool) -> tuple[int, Order | None]:
    """Failed orders at the end of the history (newest first) until one that went well."""
    done = sorted((o for o in orders if o.finished is not None),
                  key=lambda o: (o.finished, o.id), reverse=True)
    n, last = 0, None
    for o in done:
        if o.outcome == "issued" or (transient_only and not o.transient):
            break
        n += 1
        last = last or o
    return n, last


class CAOrders:
    """One CA's orders (all sites), indexed once for the many `hold` calls of a tick: a mass
    failover asks for thousands of sites against the same history, so nothing here is
    recomputed per site.

    `queued`: orders to the CA not in the history yet (handed to the workers, not started):
    they count against the CA's rate like started ones."""

    def __init__(self, orders: Iterable[Order], *, queued: int = 0) -> None:
        self.orders = list(orders)
        self.queued = queued
        self.by_site: dict[str, list[Order]] = {}
        for o in self.orders:
            self.by_site.setdefault(o.site, []).append(o)
        self.starts = sorted(o.started for o in self.orders)
        self._streak: tuple[int, Order | None] | None = None

    def streak(self) -> tuple[int, Order | None]:
        """The CA's transient failures in a row (any site), and the last of them."""
        if self._streak is None:
            self._streak = _failure_streak(self.orders, transient_only=True)
        return self._streak

    def started_after(self, since: datetime) -> list[datetime]:
        """When the orders started after `since` began, oldest first."""
        return self.starts[bisect.bisect_right(self.starts, since):]


def hold(orders: Sequence[Order] | CAOrders, site: str, ca: str, now: datetime, budget: Budget,
         *, ca_rate: int | None = None) -> Hold | None:
    """Why `site` may not order from `ca` at `now` (None: go ahead).

    `orders`: the CA's orders over at least the budget's window and, with `ca_rate` (the CA's
    `max_orders_per_hour`), the last hour (all sites)."""
    index = orders if isinstance(orders, CAOrders) else CAOrders(orders)
    mine = index.by_site.get(site, [])
    if any(o.outcome == "pending" for o in mine):
        return Hold("in_flight", None, "an order is already in flight")
    recent = sorted(o.started for o in mine if o.started > now - budget.window)
    if len(recent) >= budget.max_orders:
        until = recent[-budget.max_orders] + budget.window
        return Hold("budget", until,
                    f"issuance budget used: {len(recent)} orders to {ca} for this site in the last "
                    f"{budget.window} (max_orders = {budget.max_orders}); next one allowed at "
                    f"{until:%Y-%m-%d %H:%M:%S}Z")
    n, last = _failure_streak(mine, transient_only=False)
    if last is not None and last.finished is not None:
        until = last.finished + budget.delay(n)
        if now < until:
            what = "unusable certificate(s)" if last.outcome == "unusable" else "failed order(s)"
            return Hold("backoff", until, f"backing off until {until:%H:%M:%S}Z after {n} "
                                          f"{what}: {last.reason}")
    n, last = index.streak()
    if last is not None and last.finished is not None:
        until = last.finished + budget.delay(n)
        if now < until:
            return Hold("ca_backoff", until, f"CA {ca} failing ({n} in a row); backing off until "
                                             f"{until:%H:%M:%S}Z: {last.reason}")
    if ca_rate is not None:
        # queued orders have not started: they start now at the earliest, so leave it last
        starts = index.started_after(now - RATE_WINDOW) + [now] * index.queued
        if len(starts) >= ca_rate:
            until = starts[-ca_rate] + RATE_WINDOW
            queued = f", {index.queued} of them queued" if index.queued else ""
            return Hold("ca_rate", until,
                        f"CA {ca} rate limit: {len(starts)} orders (all sites{queued}) in the last "
                        f"hour (max_orders_per_hour = {ca_rate}); next one allowed at "
                        f"{until:%Y-%m-%d %H:%M:%S}Z")
    return None


@dataclass(frozen=True)
class Job:
    site: str
    ca: str
    replaces: str | None = None
    #: the ids of the site's certificates it was decided on: a certificate from the CA not
    #: among them when the order starts (another fleet controller's) makes it needless
    seen: frozenset[str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What the daemon hears when an order ends."""

    job: Job
    ok: bool
    transient: bool
    time: datetime
    message: str


# run(job, cancelled) -> Outcome; `cancelled()` turns true once the order's deadline passed
Runner = Callable[[Job, Callable[[], bool]], Outcome]


class Workers:
    """One worker thread per CA; each order runs in its own thread under a hard deadline.

    An order still running at `deadline` seconds is abandoned: its result is discarded (the
    runner checks `cancelled()` before storing anything) and the worker takes the next job,
    so a hanging CA holds up nothing but its own queue. Every thread is a daemon thread:
    stopping the process never waits for a CA.
    """

    def __init__(self, run: Runner, *, deadline: float, on_done: Callable[[Outcome], None],
                 abandoned: Callable[[Job, float], Outcome]) -> None:
        self._run, self._deadline = run, deadline
        self._on_done, self._abandoned = on_done, abandoned
        self._queues: dict[str, queue.Queue[Job | None]] = {}
        self._queued: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when the same site and CA already has one queued or running."""
        with self._lock:
            if self._closed or (job.site, job.ca) in self._queued:
                return False
            self._queued.add((job.site, job.ca))
            q = self._queues.get(job.ca)
            if q is None:
                q = self._queues[job.ca] = queue.Queue()
                threading.Thread(target=self._work, args=(q,), name=f"orders-{job.ca}",
                                 daemon=True).start()
        q.put(job)
        return True

    def busy(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._queued)

    def _work(self, q: queue.Queue[Job | None]) -> None:
        while (job := q.get()) is not None:
            cancel = threading.Event()
            box: list[Outcome] = []

            def one(job: Job = job, cancel: threading.Event = cancel,
                    box: list[Outcome] = box) -> None:
                try:
                    box.append(self._run(job, cancel.is_set))
                except Exception as exc:
                    log.exception("order %s/%s crashed", job.site, job.ca)
                    box.append(Outcome(job, False, False, utcnow(), f"order crashed: {exc}"))

            t = threading.Thread(target=one, name=f"order-{job.site}-{job.ca}", daemon=True)
            t.start()
            t.join(self._deadline)
            if t.is_alive():
                cancel.set()
                log.warning("order %s/%s outlasted its deadline of %.1fs: abandoned",
                            job.site, job.ca, self._deadline)
                outcome = self._abandoned(job, self._deadline)
            else:
                outcome = box[0]
            try:
                self._on_done(outcome)
            except Exception:
                log.exception("order completion handler failed")
            with self._lock:
                self._queued.discard((job.site, job.ca))
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no order is queued or running (and each ending was reported); False on
        timeout. For tools and tests: the daemon itself never waits for orders."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queued, timeout)

    def close(self) -> None:
        """Stop taking jobs; queued ones are dropped, running ones are left to their deadline."""
        with self._lock:
            self._closed = True
            queues = list(self._queues.values())
        for q in queues:
            q.put(None)
