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
(issuance.hold: in flight, budget, backoff from the moment a failure is known).

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
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import Protocol

from .config import Config
from .engine import Engine, RunPlan, TickReport
from .errors import CertFailoverError, ConfigError
from .health import Stamp, file_stamp, store_path
from .issuance import Outcome
from .metrics import Metrics, MetricsServer, listen_from_config
from .model import Action, Cert, CertState, Clock, Health, Severity
from .notify.background import Background
from .policy import flagged, switch_margin, unprotected
from .remote import CheckJob, CheckResult, RemoteChecks
from .schedule import SIGNALS, Intervals, Scheduler
from .trust.refresh import Refresher

log = logging.getLogger(__name__)

__all__ = ["Daemon", "build_daemon", "checks_for", "intervals_from_config", "signal_result",
           "update_metrics"]

REMOTE_CHECKS: Mapping[str, str] = {"crl": "revocation", "ocsp": "revocation",
                                    "ari": "revocation", "trust": "trust"}


def checks_for(signal_name: str, all_checks: Iterable[str]) -> frozenset[str]:
    """The check names that answer `signal_name` ("expiry": every local check)."""
    if signal_name in REMOTE_CHECKS:
        return frozenset({REMOTE_CHECKS[signal_name]})
    return frozenset(c for c in all_checks if c not in set(REMOTE_CHECKS.values()))


def _parse(ts: object) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        out = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return out if out.tzinfo is not None else None


class HeldLock(Protocol):
    @property
    def held(self) -> bool: ...


@dataclass(frozen=True)
class SignalResult:
    next_hint: datetime | None
    known: bool


def signal_result(signal_name: str, health: Health, now: datetime, *,
                  switch_at: datetime | None = None, not_after: datetime | None = None) -> SignalResult:
    """What the findings say about when `signal_name` is next worth checking, and whether the
    signal could be obtained at all. Expiry is due at the certificate's own times: the renewal
    point, the latest switch before expiry (`switch_at`) and notAfter."""
    fs = health.findings
    if signal_name == "expiry":
        hints = [_parse(f.detail.get("renew_at")) for f in fs if f.check == "validity"]
        hints += [switch_at, not_after]
        return SignalResult(min((h for h in hints if h and h > now), default=None), True)
    if signal_name == "trust":
        trust = [f for f in fs if f.check == "trust"]
        dates = [_parse(f.detail.get("date")) for f in trust]
        known = not any(f.detail.get("reason") == "no_data" for f in trust)
        return SignalResult(min((d for d in dates if d and d > now), default=None), known)
    if signal_name == "ari":
        ari = [f for f in fs if f.check == "ari"]
        polls = [_parse(f.detail.get("next_poll")) for f in ari]
        known = not any(f.detail.get("status") == "unknown" for f in ari)
        return SignalResult(min((p for p in polls if p and p > now), default=None), known)
    rev = [f for f in fs if f.check == "revocation"]
    key = "crl_next_update" if signal_name == "crl" else "ocsp_next_update"
    updates = [_parse(f.detail.get(key)) for f in rev]
    return SignalResult(min((u for u in updates if u and u > now), default=None),
                        not any(f.detail.get("status") == "unknown" for f in rev))


def intervals_from_config(config: Config) -> Intervals:
    raw = config.raw.get("schedule", {})
    if not isinstance(raw, Mapping):
        raise ConfigError(str(config.path), "[schedule]", "must be a table")
    return Intervals.from_mapping(raw, file=str(config.path), table="[schedule]")


def standbys_healthy(certs: Iterable[Cert], health: Mapping[str, Health],
                     distrusted: Iterable[str]) -> dict[str, int]:
    """Per site: healthy, unflagged standbys from a CA other than the active one's."""
    bad = set(distrusted)
    by_site: dict[str, list[Cert]] = {}
    for c in certs:
        by_site.setdefault(c.site, []).append(c)
    out: dict[str, int] = {}
    for site, cs in by_site.items():
        active = next((c for c in cs if c.state is CertState.ACTIVE), None)
        out[site] = sum(
            1 for c in cs if active is not None and c.state is CertState.STANDBY
            and c.ca != active.ca and c.ca not in bad and c.id in health
            and health[c.id].findings and health[c.id].healthy and not flagged(health[c.id]))
    return out


def program_trust(health: Health) -> dict[str, bool]:
    """Root program -> trusted, from "trust" findings (programs without data are left out)."""
    out: dict[str, bool] = {}
    for f in health.findings:
        program = f.detail.get("program")
        if f.check == "trust" and isinstance(program, str) and f.detail.get("reason") != "no_data":
            out[program] = f.severity is not Severity.FAIL
    return out


def update_metrics(metrics: Metrics, report: TickReport, certs: Iterable[Cert],
                   health: Mapping[str, Health], distrusted: Iterable[str], now: datetime,
                   known: set[str]) -> set[str]:
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
                             programs=program_trust(h))
        current.add(c.id)
    for gone in known - current:
        metrics.forget_cert(gone)
    for site, n in standbys_healthy(certs, health, distrusted).items():
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
        self._distrusted: frozenset[str] | None = None
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
        self.lock: HeldLock | None = None  # the store's daemon lock, checked before each tick

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

    def close(self, timeout: float = 30.0) -> None:
        if self.engine.orders is not None:
            self.engine.orders.close()
        if self.remote is not None:
            self.remote.close()
        if self.background is not None:
            self.background.close(timeout)
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    # -- signals ---------------------------------------------------------------------------
    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after the current step", signal.Signals(signum).name)
        self.stop_event.set()
        self._wake.set()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)

    # -- one tick --------------------------------------------------------------------------
    def refresh_trust(self, now: datetime) -> bool:
        """Rebuild the root-program snapshot when due; True when it changed."""
        if self.refresher is None or not self.refresher.due(now):
            return False
        try:
            summary = self.refresher.run(now)
        except CertFailoverError as exc:
            self.engine.record(None, "*", "trust_update_failed",
                               f"root-program data refresh failed (keeping the current data): {exc}")
            return False
        self.engine.record(None, "*", "trust_updated", f"root-program data refreshed: {summary}")
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
        if self.scheduler is None:
            report = self.engine.tick()
        else:
            report = self._scheduled_tick(self.scheduler, now)
        self._health.update(report.health)
        if self.metrics is not None:
            self._update_metrics(report, now)
        return report

    def _scheduled_tick(self, sched: Scheduler, now: datetime) -> TickReport:
        db = self.engine.db
        certs = {c.id: c for c in db.certs()}
        for cid in list(self._scheduled):
            if cid not in certs:
                sched.remove(cid)
                self._scheduled.discard(cid)
        for cid in certs:
            if cid not in self._scheduled:
                sched.add(cid, now)
                self._scheduled.add(cid)
        names = [k.name for k in self.engine.checks]
        plan: dict[str, set[str]] = {}
        due = sched.due(now)
        for cid, sig in due:
            plan.setdefault(cid, set()).update(checks_for(sig, names))
        distrusted = frozenset(db.distrusted())
        if self._distrusted is not None and distrusted != self._distrusted:
            changed = distrusted ^ self._distrusted
            for c in certs.values():  # the operator's switch acts at once, not at next expiry
                if c.ca in changed:
                    plan.setdefault(c.id, set()).update(checks_for("expiry", names))
        self._distrusted = distrusted
        if self._trust_changed:  # new root-program data: judge every certificate again now
            self._trust_changed = False
            for c in certs.values():
                plan.setdefault(c.id, set()).update(checks_for("trust", names))
        for site_name in self._bundles_changed():  # a trust store file changed: re-check at once
            for c in certs.values():
                if c.site == site_name:
                    plan.setdefault(c.id, set()).update(checks_for("expiry", names))
        for result in self._take_checked():  # network checks that ended: decide those sites
            self.pending.add(result.job.site)
            self._health.update(result.health)
            self._done(sched, result.job.due, result.health, certs, now)
        if self.remote is not None:
            due = self._hand_off(plan, due, certs, now)
        sites = {certs[cid].site for cid in plan if cid in certs and plan[cid]} | self.pending
        run: RunPlan = {cid: frozenset(v) for cid, v in plan.items()}
        report = self.engine.tick(sites, run=run) if sites else TickReport()
        self._done(sched, due, report.health, certs, now)
        for ev in report.events:  # orders run inline (no workers): same bookkeeping
            ca = ev.data.get("ca")
            if ev.kind == "issuance_failed" and isinstance(ca, str) and ev.data.get("transient"):
                sched.failure(ca, ev.time)
            elif ev.kind == "issued" and isinstance(ca, str):
                sched.success(ca)
        # decided again next tick: what changed, or needs a certificate some CA could still give
        self.pending = {d.site for d in report.decisions
                        if d.action is not Action.KEEP or (d.need and d.replenish_from)
                        or d.retire}
        self.pending |= {ev.site for ev in report.events if ev.kind in ("rollback", "deploy_failed")}
        self._alerts(sched, now, certs)
        return report

    def _hand_off(self, plan: dict[str, set[str]], due: list[tuple[str, str]],
                  certs: Mapping[str, Cert], now: datetime) -> list[tuple[str, str]]:
        """Move the network checks out of `plan` into background jobs (one per site); returns
        the due pairs the tick itself answers."""
        assert self.remote is not None
        slow = Engine.SLOW_CHECKS
        busy = self.remote.in_flight()
        jobs: dict[str, dict[str, frozenset[str]]] = {}
        for cid, wanted in plan.items():
            if wanted & slow and cid in certs:
                if cid not in busy:  # one in flight answers for it
                    jobs.setdefault(certs[cid].site, {})[cid] = frozenset(wanted & slow)
                wanted -= slow
        names = [k.name for k in self.engine.checks]
        remote_pairs = [(cid, sig) for cid, sig in due if checks_for(sig, names) <= slow]
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
            r = signal_result(sig, h, now, switch_at=switch_at,
                              not_after=c.not_after if c else None)
            sched.done(cid, sig, now, next_hint=r.next_hint, known=r.known)

    def _bundles_changed(self) -> set[str]:
        """Sites whose PEM trust bundles changed (mtime, size, inode) since the last tick."""
        stamps: dict[str, Stamp | None] = {}
        changed: set[str] = set()
        for site in self.engine.config.sites:
            for name in site.trust:
                path = store_path(name)
                if path is None:
                    continue
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
                        self.engine.record(None, site.name, "ca_unreachable",
                                           f"CA {a.subject} has been failing since {since}",
                                           ca=a.subject, since=since)
            else:
                c = certs.get(a.subject)
                self.engine.record(None, c.site if c else a.subject, "signal_unknown",
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
                                        db.distrusted(), now, self._exported)

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
                self.engine.record(None, "*", "lock_lost", "the daemon lock was lost; the "
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
            self._wake.wait(max(0.0, delay - (time.monotonic() - started)))
            self._wake.clear()
        return 0


def build_daemon(engine: Engine, config: Config, *, interval: float,
                 metrics_listen: tuple[str, int] | None = None, scheduled: bool = True,
                 rng: random.Random | None = None, clock: Clock | None = None) -> Daemon:
    """The daemon as `certfailover run` starts it: `[schedule]` intervals, notifications and
    orders in the background, metrics on `metrics_listen` or `[metrics] listen` (None and no
    table: off). Unscheduled (`run --once`): orders run inline, the tick waits for them."""
    scheduler = Scheduler(rng=rng or random.Random(), intervals=intervals_from_config(config)) \
        if scheduled else None
    listen = metrics_listen or listen_from_config(config.raw.get("metrics", {}),
                                                  file=str(config.path))
    metrics = Metrics() if listen is not None else None
    from .trust.refresh import settings_from_config
    d = Daemon(engine, interval=interval, scheduler=scheduler, metrics=metrics, clock=clock)
    refresher = Refresher(settings_from_config(config.raw.get("trust", {}), file=str(config.path),
                                               store=config.store))
    d.refresher = refresher if refresher.enabled else None
    for c in engine.db.certs():  # said at start too: the schedule cannot protect these
        site = d._sites.get(c.site)
        why = site and unprotected(c, site, interval=interval,
                                   issue_timeout=config.daemon.issue_timeout)
        if why:
            log.warning("%s: %s", c.id, why)
    d.notify_in_background()
    if scheduled:
        d.orders_in_background()
        d.checks_in_background()
    if metrics is not None and listen is not None:
        d.metrics_server = metrics.serve(*listen)
        log.info("metrics at %s", d.metrics_server.url)
    return d


assert set(REMOTE_CHECKS) < set(SIGNALS)
