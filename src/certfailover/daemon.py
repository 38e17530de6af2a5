"""The daemon: scheduled ticks, per-CA backoff, alerts, notifications off-thread, metrics.

Each tick asks the Scheduler which (certificate, signal) pairs are due and runs only the
checks behind those signals; every other finding is reused from the store, so a tick with
nothing due touches neither the vault nor the network. Sites with unfinished business (a
failover, a missing standby, something to retire) are decided again every tick from stored
findings. Two speeds: with `checks_in_background()` (how `certfailover run` starts) the due network
checks (revocation: CRL, OCSP, ARI) are handed to background threads (remote.py) and the tick
decides and switches on the local checks and the stored findings; when a network check ends,
its site is decided again at once. Orders to CAs run in background workers (issuance.Workers), never inside a tick: a CA that
is down, hangs or drips delays no switch. When an order ends the daemon wakes at once and
decides that site again. Whether a CA may be asked is the issuance budget's call
(issuance.hold: in flight, budget, backoff from the moment a failure is known). A deploy port
that follows its switches afterwards (a fleet controller's: `Tracker`) is asked once per tick
for its alerts, which are notified, and wakes the loop when one of its switches is due.

    signal   checks run
    crl      revocation (CRL, OCSP and ARI share one check and its caches)
    ocsp     revocation
    ari      revocation
    trust    trust (root programs)
    expiry   every local check: validity, key, names, chain, distrust

SIGTERM/SIGINT stop after the current step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import Protocol, runtime_checkable

from .caacheck import CAAGateJob
from .checks import Check
from .ct.job import WatchJob
from .engine import Engine, RunPlan, TickReport
from .errors import CertFailoverError
from .events import EventKind
from .health import Stamp, file_stamp
from .issuance import Outcome
from .metrics import Metrics, MetricsServer
from .model import Action, Cert, CertState, Clock, Event, Health, Signal
from .notify.background import Background
from .policy import healthy_standbys, switch_margin
from .remote import CheckJob, CheckResult, RemoteChecks
from .schedule import SIGNALS, Scheduler
from .sitetrust import bundles
from .status import program_trust
from .trust.refresh import Refresher

log = logging.getLogger(__name__)

__all__ = ["Daemon", "checks_for", "signal_result", "update_metrics"]


def checks_for(signal_name: str, checks: Iterable[Check]) -> frozenset[str]:
    """The names of the checks that answer `signal_name`."""
    sig = Signal(signal_name)
    return frozenset(k.name for k in checks if sig in k.signals)


class HeldLock(Protocol):
    @property
    def held(self) -> bool: ...


class Share(Protocol):
    """The sites this daemon works on when several share the store (fleet.share)."""

    owned: frozenset[str]

    def refresh(self) -> tuple[frozenset[str], frozenset[str]]: ...

    def run(self, stop: threading.Event, *,
            on_gain: Callable[[frozenset[str]], None]) -> None: ...

    def release(self) -> None: ...


@runtime_checkable
class Tracker(Protocol):
    """A deploy port that follows its switches after reporting them (fleet.deployer: hosts
    that have not converged `converge_timeout` after a publish are alerted)."""

    def track(self, sites: frozenset[str] | None) -> Sequence[Event]: ...

    def next_track(self) -> float | None: ...


@dataclass(frozen=True)
class SignalResult:
    next_hint: datetime | None
    known: bool


def signal_result(signal_name: str, health: Health, now: datetime, checks: Iterable[Check], *,
                  switch_at: datetime | None = None, not_after: datetime | None = None) -> SignalResult:
    """What the findings that answer `signal_name` (as `checks` declare) say about when it is
    next worth checking (their `next_due` hints), and whether it could be obtained at all
    (every one `known`). Expiry is also due at the certificate's own times: the latest switch
    before expiry (`switch_at`) and notAfter."""
    sig = Signal(signal_name)
    names = {n for k in checks for n in k.signals.get(sig, ())}
    found = [f for f in health.findings if f.check in names]
    hints = [f.next_due.get(sig) for f in found]
    if sig is Signal.EXPIRY:
        hints += [switch_at, not_after]
    return SignalResult(min((h for h in hints if h is not None and h > now), default=None),
                        all(f.known for f in found))


def standbys_healthy(certs: Iterable[Cert], health: Mapping[str, Health],
                     distrusted: Iterable[str],
                     site_distrust: Mapping[str, Iterable[str]] | None = None) -> dict[str, int]:
    """Per site: how many healthy independent standbys it has (policy.healthy_standbys);
    `distrusted` everywhere, `site_distrust` per site."""
    bad = frozenset(distrusted)
    by_site: dict[str, list[Cert]] = {}
    for c in certs:
        by_site.setdefault(c.site, []).append(c)
    extra = site_distrust or {}
    return {site: len(healthy_standbys(cs, health, distrusted=bad | frozenset(extra.get(site, ()))))
            for site, cs in by_site.items()}


def update_metrics(metrics: Metrics, report: TickReport, certs: Iterable[Cert],
                   health: Mapping[str, Health], distrusted: Iterable[str], now: datetime,
                   known: set[str], site_distrust: Mapping[str, Iterable[str]] | None = None
                   ) -> set[str]:
    """Metrics from one tick's report and the store; returns the cert ids now exported."""
    certs = list(certs)
    for ev in report.events:
        if ev.kind == "failover":
            metrics.inc_failover(ev.site)
        elif ev.kind == "issuance_failed" and isinstance(ev.data.get("ca"), str):
            metrics.inc_issuance_error(ev.data["ca"])
    current: set[str] = set()
    for c in certs:
        h = health.get(c.id)
        if h is None or not h.findings:
            continue
        metrics.observe_cert(site=c.site, cert_id=c.id, ca=c.ca, not_after=c.not_after, now=now,
                             severity=h.severity.value, active=c.state is CertState.ACTIVE,
                             programs={p: t.trusted for p, t in program_trust(h).items()
                                       if t.trusted is not None})
        current.add(c.id)
    for gone in known - current:
        metrics.forget_cert(gone)
    for site, n in standbys_healthy(certs, health, distrusted, site_distrust).items():
        metrics.set_standbys_healthy(site, n)
    metrics.set_last_check(now)
    return current


class Daemon:
    """Tick every `interval` seconds. Without a scheduler every tick checks everything (the
    behaviour of `Engine.tick()`); with one, only what is due."""

    def __init__(self, engine: Engine, *, interval: float,
                 on_tick: Callable[[TickReport], None] | None = None,
                 scheduler: Scheduler | None = None, metrics: Metrics | None = None,
                 clock: Clock | None = None) -> None:
        self.engine, self.interval, self.on_tick = engine, interval, on_tick
        self.scheduler, self.metrics = scheduler, metrics
        self.clock: Clock = clock or engine.clock
        self.stop_event = threading.Event()
        self.ticks = 0
        self.pending: set[str] = {s.name for s in engine.config.sites}  # decide all at first
        self._sites = {s.name: s for s in engine.config.sites}
        self._distrusted: frozenset[tuple[str | None, str]] | None = None  # (site or all, CA)
        self._bundle_stamps: dict[str, Stamp | None] | None = None
        self.refresher: Refresher | None = None
        self._trust_changed = False
        self._health: dict[str, Health] = {}
        self._exported: set[str] = set()
        self._scheduled: set[str] = set()
        self.metrics_server: MetricsServer | None = None
        self.background: Background | None = None
        self._wake = threading.Event()  # an order or a check ended, or a stop: tick now
        self._ended: list[Outcome] = []
        self._checked: list[CheckResult] = []
        self._ended_lock = threading.Lock()
        self.remote: RemoteChecks | None = None
        self.ct_watch: WatchJob | None = None  # the CT watch's own thread (wiring starts it)
        self.caa_job: CAAGateJob | None = None  # CAA re-checked every [caa] interval
        self.lock: HeldLock | None = None  # the store's daemon lock, checked before each tick
        #: fleet controllers: only the sites whose lease this one holds are ticked
        self.share: Share | None = None
        self._gained: set[str] = set()  # sites taken over since the last tick
        self._taken_over: frozenset[str] = frozenset()  # ... handed to this tick
        self._share_thread: threading.Thread | None = None

    # -- network checks ---------------------------------------------------------------------
    def checks_in_background(self) -> None:
        """Due network checks (revocation, ARI) run in background threads from now on; the
        tick decides on local checks and stored findings and never waits for a responder."""
        if self.remote is None:
            self.remote = RemoteChecks(self._run_checks, threads=self.engine.workers,
                                       on_done=self._checked_one)

    def _run_checks(self, job: CheckJob) -> dict[str, Health]:
        site = self._sites[job.site]
        certs = [c for c in self.engine.db.certs(job.site) if c.id in job.run]
        return self.engine.check_site(site, certs, run=job.run)

    def _checked_one(self, result: CheckResult) -> None:
        with self._ended_lock:
            self._checked.append(result)
        self._wake.set()

    def _take_checked(self) -> list[CheckResult]:
        with self._ended_lock:
            out, self._checked = self._checked, []
        return out

    # -- orders ----------------------------------------------------------------------------
    def orders_in_background(self) -> None:
        """Orders run in the engine's background workers from now on; each ending wakes the
        loop so the site is decided again at once."""
        if self.engine.orders is None:
            self.engine.start_workers(self._order_ended)

    def _order_ended(self, outcome: Outcome) -> None:
        with self._ended_lock:
            self._ended.append(outcome)
        self._wake.set()

    def _take_ended(self) -> list[Outcome]:
        with self._ended_lock:
            out, self._ended = self._ended, []
        return out

    # -- notifications ---------------------------------------------------------------------
    def notify_in_background(self) -> None:
        """Deliver the engine's notifications from a worker thread: a dead webhook or a slow
        SMTP server never delays a tick (or a failover)."""
        target = self.engine.notify
        if target is not None and not isinstance(target, Background):
            self.background = Background(target)
            self.engine.notify = self.background

    # -- shared work (fleet controllers) ----------------------------------------------------
    def share_in_background(self, share: Share) -> None:
        """Tick only the sites `share` holds; its leases are renewed (and sites of a dead
        controller taken over, with a tick at once) in a thread of their own."""
        self.share = share

        def gained(sites: frozenset[str]) -> None:
            with self._ended_lock:
                self._gained |= sites
            self._wake.set()
        self._share_thread = threading.Thread(
            target=share.run, args=(self.stop_event,), kwargs={"on_gain": gained},
            name="certfailover-share", daemon=True)
        self._share_thread.start()

    def _owned(self) -> frozenset[str] | None:
        """The sites to tick (None: all); sites taken over are decided at once."""
        if self.share is None:
            return None
        _, gained = self.share.refresh()
        with self._ended_lock:
            gained, self._gained = gained | frozenset(self._gained), set()
        self.pending |= gained
        self._taken_over = gained
        return self.share.owned

    def close(self, timeout: float = 30.0) -> None:
        if self.share is not None:
            self.stop_event.set()
            if self._share_thread is not None:
                self._share_thread.join(timeout)
            self.share.release()
        if self.engine.orders is not None:
            self.engine.orders.close()
        if self.remote is not None:
            self.remote.close()
        if self.ct_watch is not None:
            self.ct_watch.close()
        if self.caa_job is not None:
            self.caa_job.close()
        if self.background is not None:
            self.background.close(timeout)
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    def wake(self) -> None:
        """Tick now (a background job changed what the tick decides on, e.g. a CA distrusted
        for a site by the CT watch)."""
        self._wake.set()

    # -- signals ---------------------------------------------------------------------------
    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        self.stop_event.set()
        self._wake.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        log.info("daemon running (pid %d): SIGTERM or SIGINT stops it after the current step",
                 os.getpid())

    # -- one tick --------------------------------------------------------------------------
    def refresh_trust(self, now: datetime) -> bool:
        """Rebuild the root-program snapshot when due; True when it changed."""
        if self.refresher is None or not self.refresher.due(now):
            return False
        try:
            summary = self.refresher.run(now)
        except CertFailoverError as exc:
            self.engine.record(None, "*", EventKind.TRUST_UPDATE_FAILED,
                               f"root-program data refresh failed (keeping the current data): {exc}")
            return False
        self.engine.record(None, "*", EventKind.TRUST_UPDATED, f"root-program data refreshed: {summary}")
        return True

    def tick(self) -> TickReport:
        now = self.clock()
        for o in self._take_ended():  # orders that ended since the last tick
            self.pending.add(o.job.site)
            if self.scheduler is not None:
                if o.ok:
                    self.scheduler.success(o.job.ca)
                elif o.transient:  # feeds the ca_unreachable alert, from the failure's time
                    self.scheduler.failure(o.job.ca, o.time)
            if self.metrics is not None and not o.ok:
                self.metrics.inc_issuance_error(o.job.ca)
        if self.refresh_trust(now):
            self._trust_changed = True
        owned = self._owned()
        if self.scheduler is None:
            report = self.engine.tick(owned)
        else:
            report = self._scheduled_tick(self.scheduler, now, owned)
        self._track(owned, report)
        self._health.update(report.health)
        if self.metrics is not None:
            self._update_metrics(report, now)
        return report

    def _track(self, owned: frozenset[str] | None, report: TickReport) -> None:
        """The deploy port's alerts of this tick (stored by it; added to the report and
        notified here). One query per tick; a database fault is logged by the port."""
        port = self.engine.deploy
        if not isinstance(port, Tracker):
            return
        events = port.track(owned)
        if events:
            log.warning("%d alert(s) of the deploy port: %s%s", len(events),
                        ", ".join(f"{ev.site} {ev.kind}" for ev in events[:10]),
                        " ..." if len(events) > 10 else "")
        for ev in events:
            report.events.append(ev)
            if self.engine.notify is not None:
                try:
                    self.engine.notify(ev)
                except Exception:  # notifications never stop the daemon
                    log.exception("notification of %s failed", ev.kind)

    def _scheduled_tick(self, sched: Scheduler, now: datetime,
                        owned: frozenset[str] | None = None) -> TickReport:
        certs = {c.id: c for c in self.engine.db.certs()}
        for cid in [c for c in self._scheduled if c in certs
                    and certs[c].site in self._taken_over]:
            sched.remove(cid)  # a site taken over: every check of it is due at once
            self._scheduled.discard(cid)
        self._taken_over = frozenset()
        self._follow(sched, certs, now)
        due = sched.due(now)
        if owned is not None:  # another controller's sites stay due here until taken over
            due = [(cid, sig) for cid, sig in due if cid in certs and certs[cid].site in owned]
        plan = self._plan(due, certs)
        if owned is not None:
            plan = {cid: v for cid, v in plan.items() if cid in certs and certs[cid].site in owned}
        for result in self._take_checked():  # network checks that ended: decide those sites
            self.pending.add(result.job.site)
            self._health.update(result.health)
            self._done(sched, result.job.due, result.health, certs, now)
        if self.remote is not None:
            due = self._hand_off(plan, due, certs, now)
        sites = {certs[cid].site for cid in plan if cid in certs and plan[cid]} | self.pending
        if owned is not None:
            sites &= owned
        run: RunPlan = {cid: frozenset(v) for cid, v in plan.items()}
        report = self.engine.tick(sites, run=run) if sites else TickReport()
        self._done(sched, due, report.health, certs, now)
        self._orders_inline(sched, report)
        self.pending = self._undecided(report)
        self._alerts(sched, now, certs)
        return report

    def _follow(self, sched: Scheduler, certs: Mapping[str, Cert], now: datetime) -> None:
        """The schedule follows the store: new certificates are due at once, gone ones leave."""
        for cid in list(self._scheduled):
            if cid not in certs:
                sched.remove(cid)
                self._scheduled.discard(cid)
        for cid in certs:
            if cid not in self._scheduled:
                sched.add(cid, now)
                self._scheduled.add(cid)

    def _plan(self, due: Iterable[tuple[str, str]],
              certs: Mapping[str, Cert]) -> dict[str, set[str]]:
        """The checks to run now per certificate: what is due, and what a change made due."""
        checks = self.engine.checks
        plan: dict[str, set[str]] = {}
        for cid, sig in [*due, *self._changed(certs)]:
            plan.setdefault(cid, set()).update(checks_for(sig, checks))
        return plan

    def _changed(self, certs: Mapping[str, Cert]) -> list[tuple[str, Signal]]:
        """Signals due at once, whatever the schedule says: the operator's distrust list changed
        (acts at once, not at next expiry), new root-program data, a trust store file changed."""
        out: list[tuple[str, Signal]] = []
        db = self.engine.db
        distrusted = frozenset((None, ca) for ca in db.distrusted()) | frozenset(
            (site, ca) for site, cas in db.site_distrust().items() for ca in cas)
        if self._distrusted is not None and distrusted != self._distrusted:
            changed = distrusted ^ self._distrusted
            out += [(c.id, Signal.EXPIRY) for c in certs.values()
                    if (None, c.ca) in changed or (c.site, c.ca) in changed]
        self._distrusted = distrusted
        if self._trust_changed:
            self._trust_changed = False
            out += [(c.id, Signal.TRUST) for c in certs.values()]
        bundles = self._bundles_changed()
        out += [(c.id, Signal.EXPIRY) for c in certs.values() if c.site in bundles]
        return out

    def _orders_inline(self, sched: Scheduler, report: TickReport) -> None:
        """Orders that ran inside the tick (no workers): the same CA bookkeeping as workers'."""
        for ev in report.events:
            ca = ev.data.get("ca")
            if ev.kind == "issuance_failed" and isinstance(ca, str) and ev.data.get("transient"):
                sched.failure(ca, ev.time)
            elif ev.kind == "issued" and isinstance(ca, str):
                sched.success(ca)

    def _undecided(self, report: TickReport) -> set[str]:
        """Sites decided again next tick: what changed, or needs a certificate some CA could
        still give."""
        pending = {d.site for d in report.decisions
                   if d.action is not Action.KEEP or (d.need and d.replenish_from) or d.retire}
        pending |= {ev.site for ev in report.events if ev.kind in ("rollback", "deploy_failed")}
        return pending

    def _hand_off(self, plan: dict[str, set[str]], due: list[tuple[str, str]],
                  certs: Mapping[str, Cert], now: datetime) -> list[tuple[str, str]]:
        """Move the network checks out of `plan` into background jobs (one per site); returns
        the due pairs the tick itself answers."""
        assert self.remote is not None
        slow = self.engine.slow_checks
        busy = self.remote.in_flight()
        jobs: dict[str, dict[str, frozenset[str]]] = {}
        for cid, wanted in plan.items():
            if wanted & slow and cid in certs:
                if cid not in busy:  # one in flight answers for it
                    jobs.setdefault(certs[cid].site, {})[cid] = frozenset(wanted & slow)
                wanted -= slow
        remote_pairs = [(cid, sig) for cid, sig in due
                        if checks_for(sig, self.engine.checks) <= slow]
        for site, run in jobs.items():
            pairs = tuple(p for p in remote_pairs if p[0] in run)
            self.remote.submit(CheckJob(site, run, pairs, now))
        return [p for p in due if p not in remote_pairs]

    def _done(self, sched: Scheduler, due: Iterable[tuple[str, str]],
              health: Mapping[str, Health], certs: Mapping[str, Cert], now: datetime) -> None:
        """Tell the scheduler about answered signals, with each one's next-due hint."""
        margin = timedelta(seconds=self.engine.config.daemon.expiry_margin)
        for cid, sig in due:
            h = health.get(cid)
            c = certs.get(cid)
            if h is None or (cid, sig) not in sched:
                continue
            switch_at = None
            if c is not None and c.site in self._sites:
                switch_at = c.not_after - switch_margin(c, self._sites[c.site], margin)
            r = signal_result(sig, h, now, self.engine.checks, switch_at=switch_at,
                              not_after=c.not_after if c else None)
            sched.done(cid, sig, now, next_hint=r.next_hint, known=r.known)

    def _bundles_changed(self) -> set[str]:
        """Sites whose PEM trust bundles changed (mtime, size, inode) since the last tick."""
        stamps: dict[str, Stamp | None] = {}
        changed: set[str] = set()
        for site in self.engine.config.sites:
            for bundle in bundles(site.trust):
                path = bundle.path
                try:
                    stamp: Stamp | None = file_stamp(path)
                except OSError:
                    stamp = None
                stamps[str(path)] = stamp
                if self._bundle_stamps is not None and self._bundle_stamps.get(str(path)) != stamp:
                    changed.add(site.name)
        self._bundle_stamps = stamps
        return changed

    def _alerts(self, sched: Scheduler, now: datetime, certs: Mapping[str, Cert]) -> None:
        for a in sched.alerts(now):
            since = a.since.isoformat()
            if a.kind == "ca_unreachable":
                for site in self.engine.config.sites:
                    if a.subject in site.cas:
                        self.engine.record(None, site.name, EventKind.CA_UNREACHABLE,
                                           f"CA {a.subject} has been failing since {since}",
                                           ca=a.subject, since=since)
            else:
                c = certs.get(a.subject)
                self.engine.record(None, c.site if c else a.subject, EventKind.SIGNAL_UNKNOWN,
                                   f"{a.signal} for {a.subject} unknown since {since}",
                                   cert=a.subject, signal=a.signal, since=since)

    def _update_metrics(self, report: TickReport, now: datetime) -> None:
        assert self.metrics is not None
        db = self.engine.db
        certs = db.certs()
        for c in certs:
            if c.id not in self._health:
                self._health[c.id] = Health(c.id, tuple(db.findings(c.id)))
        live = {c.id for c in certs}
        for cid in list(self._health):
            if cid not in live:
                del self._health[cid]
        self._exported = update_metrics(self.metrics, report, certs, self._health,
                                        db.distrusted(), now, self._exported,
                                        db.site_distrust())

    # -- the loop --------------------------------------------------------------------------
    def run(self, *, once: bool = False, max_ticks: int | None = None) -> int:
        """Tick until stopped; 0, or 3 when the store's daemon lock was lost (a PostgreSQL
        session that died): another daemon may be acting, so this one stops at once."""
        failures = 0
        while not self.stop_event.is_set():
            started = time.monotonic()
            if self.lock is not None and not self.lock.held:
                log.error("the daemon lock on %s was lost; stopping (another daemon may act)",
                          getattr(self.lock, "where", "the store"))
                self.engine.record(None, "*", EventKind.LOCK_LOST, "the daemon lock was lost; the "
                                   "daemon stopped so that two daemons never act at once")
                return 3
            try:
                report = self.tick()
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
            wait = max(0.0, delay - (time.monotonic() - started))
            port = self.engine.deploy
            due = port.next_track() if isinstance(port, Tracker) and not failures else None
            retry = self.engine.next_switch_retry()  # a failed switch's next try
            if retry is not None and not failures:
                due = retry if due is None else min(due, retry)
            self._wake.wait(wait if due is None else min(wait, due))
            self._wake.clear()
        return 0


assert {s.value for s in Signal} == set(SIGNALS)
