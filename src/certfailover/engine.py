"""One tick of the engine, per site: check -> decide -> deploy -> replenish -> record.

The engine knows ports, not adapters: issuers (by CA name), a deploy function (per server
name) and a notifier come from the composition root (wiring.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from . import aia, chains, keys, policy
from .backoff import Backoff
from .checks import CertMaterial, Check, CheckContext
from .config import Config, SiteConfig
from .errors import (
    CertFailoverError,
    InputError,
    IssuanceError,
    OrderInFlight,
    TransientIssuanceError,
)
from .events import EventKind
from .health import run_checks
from .issuance import RATE_WINDOW, Budget, CAOrders, Hold, Job, Outcome, Workers, hold
from .model import (
    Action,
    Cert,
    CertState,
    Clock,
    Decision,
    Event,
    Finding,
    Health,
    Order,
    RevokedFact,
    ServedChain,
    Severity,
    utcnow,
)
from .names import cert_names, name_matches
from .sitetrust import programs
from .store.db import Database
from .store.vault import Vault, base_dir, chain_dir, load_key, load_pem_certs

log = logging.getLogger(__name__)


class IssuerPort(Protocol):
    name: str

    def issue(self, csr_pem: bytes, *, deadline: Any, replaces: str | None = None) -> Any: ...


@dataclass(frozen=True)
class Switch:
    """One site's activation, handed to the deploy port."""

    site: SiteConfig
    target: Cert
    previous: Cert | None


@dataclass(frozen=True)
class SwitchResult:
    site: str
    ok: bool
    rolled_back: bool
    message: str
    seconds: float


# deploy port: server name (None = no server configured, only the live link) -> results
DeployPort = Callable[[str | None, Sequence[Switch]], list[SwitchResult]]
Notify = Callable[[Event], None]

#: which checks to run now, per certificate id; certificates not named reuse stored findings
RunPlan = Mapping[str, frozenset[str]]


def forecasts(findings: Iterable[Finding]) -> set[tuple[str, str]]:
    """(program, date) of every distrust forecast: a root program's verdict with a date."""
    return {(f.program, f.forecast.isoformat()) for f in findings
            if f.program is not None and f.forecast is not None}


#: the findings the engine itself makes: a certificate the vault cannot load, and a verified
#: revocation kept as a fact (it replaces the revocation check's finding of the same name)
STORE = "store"
REVOKED = "revocation"


def _unknown_changes(cert_id: str, checks: Iterable[Check], fresh: Sequence[Finding],
                     ctx: CheckContext) -> dict[tuple[str, str], datetime | None]:
    """Unknown streaks of the findings `checks` produce that start now (ctx.now) or end (None),
    compared with the stored ones in `ctx.unknown_since`."""
    out: dict[tuple[str, str], datetime | None] = {}
    for name in {n for k in checks for n in k.findings}:
        key = (cert_id, name)
        unknown = any(f.check == name and not f.known for f in fresh)
        if unknown and key not in ctx.unknown_since:
            out[key] = ctx.now
        elif not unknown and key in ctx.unknown_since:
            out[key] = None
    return out


@dataclass
class OrderBook:
    """One tick's cache of what deciding whether a CA may be asked costs a query, per CA.

    `orders[ca]` is read once per tick and indexed (issuance.CAOrders); an order handed to the
    workers is counted into it (`queued`) instead of reading the table again, since it is not
    in the table until its worker starts it. An order run inline is popped: read again."""

    orders: dict[str, CAOrders] = field(default_factory=dict)
    dead: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class TickReport:
    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    health: dict[str, Health] = field(default_factory=dict)


def _span(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _urgency(d: Decision) -> int:
    """Which sites get a CA's room first: nothing healthy to serve (or nothing served), then a
    site that just failed over (its standby became its active), then one short of standbys."""
    if d.action is Action.NONE_HEALTHY or (d.target is None and d.active is None):
        return 0
    return 1 if d.action is Action.FAILOVER else 2


def cert_id(site: str, ca: str, serial: str) -> str:
    return f"{site}/{ca}/{serial}"


def describe(site: str, ca: str, leaf: x509.Certificate, path: Path, state: CertState,
             now: Any) -> Cert:
    serial = format(leaf.serial_number, "x")
    return Cert(
        id=cert_id(site, ca, serial), site=site, ca=ca, serial=serial,
        not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
        sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        key_type=keys.key_type_of(leaf.public_key()), issuer_dn=leaf.issuer.rfc4514_string(),
        state=state, created=now, path=str(path),
    )


def check_chain_order(leaf: x509.Certificate, chain: Sequence[x509.Certificate], source: str) -> None:
    child = leaf
    for i, parent in enumerate(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise InputError(
                f"{source}: chain certificate #{i + 1} ({parent.subject.rfc4514_string()}) did not "
                f"issue {child.subject.rfc4514_string()}: {exc or 'bad signature'}") from exc
        child = parent


class Engine:
    def __init__(self, config: Config, db: Database, vault: Vault, *,
                 checks: Sequence[Check], issuers: Mapping[str, Callable[[SiteConfig], IssuerPort]],
                 deploy: DeployPort, notify: Notify | None = None, clock: Clock = utcnow,
                 workers: int = 8) -> None:
        self.config, self.db, self.vault = config, db, vault
        self.checks, self.issuers, self.deploy = list(checks), issuers, deploy
        self.notify, self.clock, self.workers = notify, clock, workers
        self._missing: dict[str, tuple[object, ...]] = {}  # standby_missing already said
        self._none_said: dict[str, str] = {}  # none_healthy already said
        self._site_errors: dict[str, str] = {}  # site_error already said
        self._cannot_said: set[tuple[str, str]] = set()  # ca_cannot_issue already said
        #: (site, CA) -> why CAA forbids the CA for the site, or None (caacheck.CAAGate.forbids)
        self.caa: Callable[[str, str], str | None] | None = None
        self._said_lock = threading.Lock()
        d = config.daemon
        self.budget = Budget(max_orders=d.max_orders, window=timedelta(seconds=d.orders_window),
                             backoff_base=timedelta(seconds=d.order_backoff),
                             backoff_cap=timedelta(seconds=d.order_backoff_cap))
        #: switches that failed wait before they are tried again ([daemon] switch_backoff)
        self.switch_hold: Backoff[str] = Backoff(d.switch_backoff, d.switch_backoff_cap)
        #: background order workers (the daemon); None: orders run inline (CLI, run --once)
        self.orders: Workers | None = None
        self._materials: dict[str, CertMaterial] | None = None  # loaded once per tick
        self.chains = chains.ChainJudge.from_checks(self.checks)  # which chain to serve
        #: completes a stored chain that misses an intermediate (AIA caIssuers); None: never
        self.aia: aia.IssuerFetcher | None = aia.IssuerFetcher()
        #: told of every certificate stored, before its row is written (a fleet controller
        #: seals it for the others)
        self.on_stored: Callable[[Cert], None] | None = None
        #: where the material a site's servers were told to serve is (a live link's target);
        #: a fleet controller has no live links: what its agents were told (fleet_desired)
        self.served_target: Callable[[str], Path | None] = vault.live_target
        #: asked for a certificate whose material is not in this vault (a fleet controller
        #: writes it from the sealed record another controller stored); then read again
        self.on_missing: Callable[[Cert], None] | None = None
        #: cert id -> (leaf, every stored chain), from its last load by material()
        self._stored_chains: dict[str, tuple[x509.Certificate, tuple[Any, ...]]] = {}

    # -- recording -------------------------------------------------------------------------
    def record(self, report: TickReport | None, site: str, kind: EventKind, message: str,
               **data: Any) -> Event:
        ev = Event(self.clock(), site, kind, message, data)
        self.db.add_events([ev])
        log.info("%s %s: %s", site, kind, message)
        if report is not None:
            report.events.append(ev)
        if self.notify is not None:
            try:
                self.notify(ev)
            except Exception:  # notifications never stop the engine
                log.exception("notification of %s failed", kind)
        return ev

    # -- material --------------------------------------------------------------------------
    def material(self, cert: Cert) -> CertMaterial:
        memo = self._materials
        hit = memo.get(cert.id) if memo is not None else None
        if hit is not None and hit.cert.path == cert.path:
            return hit if hit.cert == cert else dataclasses.replace(hit, cert=cert)
        if self.on_missing is not None and not (Path(cert.path) / "privkey.pem").is_file():
            self.on_missing(cert)  # another fleet controller's: written from its sealed record
        m = self.vault.load(Path(cert.path))
        # every stored chain's certificates: the certificate fails only when no path is left
        out = CertMaterial(cert=cert, leaf=m.leaf, chain=m.intermediates,
                           key_matches=keys.same_public_key(m.key.public_key(), m.leaf.public_key()))
        self._stored_chains[cert.id] = (m.leaf, m.chains)
        if memo is not None:
            memo[cert.id] = out
        return out

    def context(self, site: SiteConfig) -> CheckContext:
        return CheckContext(
            now=self.clock(), domains=site.domains, trust=site.trust,
            distrusted_cas=frozenset(self.db.distrusted(site.name)),
            renew_fraction=site.renew_fraction, revocation=site.revocation,
            forecast_days=site.forecast_days, unknown_since=self.db.unknown_since(site.name),
        )

    def finding_owner(self, finding: str) -> str:
        """Name of the Check that produces findings named `finding` (itself when none does)."""
        return next((k.name for k in self.checks if finding in k.findings), finding)

    @property
    def slow_checks(self) -> frozenset[str]:
        """The checks that wait on remote parties (responders): run after the first switch."""
        return frozenset(k.name for k in self.checks if k.remote)

    def check_site(self, site: SiteConfig, certs: Sequence[Cert] | None = None, *,
                   run: RunPlan | None = None,
                   revoked: dict[str, RevokedFact] | None = None) -> dict[str, Health]:
        """Health of each certificate. `run=None`: every check now. With a plan, a certificate
        named in it runs only the named checks (the rest of its findings come from the store);
        one not named reuses its stored findings without touching the vault or the network.
        A certificate with no stored findings yet always runs every check. `revoked`: the
        site's revocation facts (loaded when None); a revocation recorded now is added to it."""
        certs = self.db.certs(site.name) if certs is None else certs
        ctx = self.context(site)
        out: dict[str, Health] = {}
        # per certificate: the findings to store, and which finding names they replace (None:
        # all); a partial run replaces only its own, so the daemon's fast pass and a background
        # network check of the same certificate never overwrite each other's findings
        ran: dict[str, tuple[tuple[Finding, ...], frozenset[str] | None]] = {}
        unknown: dict[tuple[str, str], datetime | None] = {}  # unknown streaks that start or end
        revoked = self.db.revoked(site.name) if revoked is None else revoked
        for c in certs:
            stored = self.db.findings(c.id)
            only: frozenset[str] | None = None
            if run is not None and stored:
                only = run.get(c.id, frozenset())
                if not only:
                    out[c.id] = Health(c.id, tuple(stored))
                    continue
            try:
                mat = self.material(c)
            except CertFailoverError as exc:
                out[c.id] = Health(c.id, (Finding(STORE, Severity.FAIL, str(exc)),))
                ran[c.id] = (out[c.id].findings, None)
                continue
            checks = self.checks if only is None else [k for k in self.checks if k.name in only]
            fresh = run_checks(mat, ctx, checks).findings
            unknown.update(_unknown_changes(c.id, checks, fresh, ctx))
            names: frozenset[str] | None = None
            if only is not None:
                kept = tuple(f for f in stored if self.finding_owner(f.check) not in only
                             and f.check != STORE)
                full = self._keep_revoked(site, c, kept + fresh, revoked)
                names = frozenset({f.check for f in stored if self.finding_owner(f.check) in only}
                                  | {f.check for f in full if f not in kept} | {STORE})
                ran[c.id] = (tuple(f for f in full if f.check in names), names)
            else:
                full = self._keep_revoked(site, c, fresh, revoked)
                ran[c.id] = (full, None)
            out[c.id] = Health(c.id, full)
            self._announce_forecasts(site, c, stored, full)
            self._announce_cannot_issue(site, c, full)
        for cid, (found, replaces) in ran.items():
            self.db.save_findings(cid, ctx.now, found, checks=replaces)
        self.db.set_unknown(site.name, unknown)
        return out

    def _keep_revoked(self, site: SiteConfig, cert: Cert, found: tuple[Finding, ...],
                      revoked: dict[str, RevokedFact]) -> tuple[Finding, ...]:
        """A verified revocation is a fact: recorded the first time it is seen, and from then
        on the certificate's revocation finding stays FAIL whatever later fetches say (a CA
        whose CRL and OCSP go dark cannot bring a revoked certificate back)."""
        fact = revoked.get(cert.id)
        if fact is None:
            hit = next((f for f in found if f.revoked and f.severity is Severity.FAIL), None)
            if hit is None:
                return found
            revoked[cert.id] = RevokedFact(cert.id, self.clock(), hit.reason)
            if self.db.mark_revoked(cert.id, site.name, self.clock(), hit.reason):
                self.record(None, site.name, EventKind.REVOKED,
                            f"{cert.id} ({cert.ca}) is revoked: {hit.reason}; it will never be "
                            "served again", cert=cert.id, ca=cert.ca)
            return found
        kept = tuple(f for f in found if f.check != REVOKED or f.revoked)
        if any(f.revoked for f in kept):
            return kept
        return (Finding(REVOKED, Severity.FAIL,
                        f"revoked (recorded {fact.at:%Y-%m-%d %H:%M:%S}Z): {fact.reason}",
                        {"recorded": fact.at.isoformat()}, revoked=True),) + kept

    def _announce_cannot_issue(self, site: SiteConfig, cert: Cert,
                               found: Sequence[Finding]) -> None:
        """A `ca_cannot_issue` event once per CA and program (per process)."""
        for f in found:
            program = f.cannot_issue_for
            if program is None:
                continue
            with self._said_lock:
                if (cert.ca, program) in self._cannot_said:
                    continue
                self._cannot_said.add((cert.ca, program))
            self.record(None, site.name, EventKind.CA_CANNOT_ISSUE, f.reason + "; no order goes to it "
                        f"for sites that require {program}", ca=cert.ca, program=program)

    def cannot_issue(self, ca: str) -> dict[str, str]:
        """Root program -> why `ca` cannot issue a certificate it would trust now, from the
        stored `ca_issuance` findings of the CA's newest certificates (any site)."""
        mine = sorted((c for c in self.db.certs(include_retired=True) if c.ca == ca),
                      key=lambda c: c.created, reverse=True)[:20]
        out: dict[str, str] = {}
        for c in mine:
            for f in self.db.findings(c.id):
                if f.cannot_issue_for is not None:
                    out.setdefault(f.cannot_issue_for, f.reason)
        return out

    def _announce_forecasts(self, site: SiteConfig, cert: Cert, before: Sequence[Finding],
                            after: Sequence[Finding]) -> None:
        """A `distrust_forecast` event the first time a root program's forecast appears."""
        for program, date in sorted(forecasts(after) - forecasts(before)):
            self.record(None, site.name, EventKind.DISTRUST_FORECAST,
                        f"{cert.id} ({cert.ca}): {program} stops trusting it from {date}",
                        cert=cert.id, ca=cert.ca, program=program, date=date)

    # -- adding certificates ---------------------------------------------------------------
    def store_cert(self, site: SiteConfig, ca: str, *, leaf_pem: bytes, chain_pem: bytes,
                   key_pem: bytes, source: str, alt_chains_pem: Sequence[bytes] = (),
                   fresh_key: bool = False, until: float | None = None) -> Cert:
        """Check a certificate for consistency, then write it to the vault as a standby.
        `alt_chains_pem`: the other chains offered for it (docs/chains.md). `fresh_key`: the
        key was generated for this order just now, so no other certificate can hold it (the
        reuse check, which reads every other certificate's material, is skipped: on a fleet
        controller another one's may not be in this vault yet). `until`: a time.monotonic()
        deadline for its network work (the AIA completion of a chain; an order's)."""
        leaf_list = load_pem_certs(leaf_pem, f"{source} certificate")
        if not leaf_list:
            raise InputError(f"{source}: no certificate found")
        leaf = leaf_list[0]
        chain = leaf_list[1:] + (load_pem_certs(chain_pem, f"{source} chain") if chain_pem.strip() else [])
        key = load_key(key_pem, f"{source} private key")
        if not keys.same_public_key(key.public_key(), leaf.public_key()):
            raise InputError(f"{source}: the private key does not belong to the certificate")
        names = cert_names(leaf)
        missing = [d for d in site.domains if not any(name_matches(n, d) for n in names)]
        if missing:
            raise InputError(f"{source}: certificate does not cover {', '.join(missing)} "
                             f"(it names {', '.join(names) or 'nothing'})")
        check_chain_order(leaf, chain, source)
        alts = [load_pem_certs(alt, f"{source} chain {i}") if alt.strip() else []
                for i, alt in enumerate(alt_chains_pem, start=1)]
        for i, alt_chain in enumerate(alts, start=1):
            check_chain_order(leaf, alt_chain, f"{source} chain {i}")
        if self.aia is not None:  # a chain missing an intermediate: completed as one more
            alt_chains_pem = (*alt_chains_pem,
                              *self.aia.completions(leaf, [chain, *alts], until=until))
        spki = keys.spki_sha256(leaf.public_key())
        for other in () if fresh_key else self.db.certs(site.name, include_retired=True):
            if other.ca != ca:
                om = self.vault.load(Path(other.path))
                if keys.spki_sha256(om.leaf.public_key()) == spki:
                    raise InputError(f"{source}: this key is already used by {other.id}; "
                                     "certificates from different CAs must have their own keys")
        serial = format(leaf.serial_number, "x")
        pem = serialization.Encoding.PEM
        path = self.vault.save(
            site.name, ca, serial, leaf_pem=leaf.public_bytes(pem),
            chain_pem=b"".join(c.public_bytes(pem) for c in chain),
            key_pem=keys.key_pem(key), alt_chains_pem=alt_chains_pem)
        cert = describe(site.name, ca, leaf, path, CertState.STANDBY, self.clock())
        if self.on_stored is not None:  # before the row: whoever sees it finds the material
            try:
                self.on_stored(cert)
            except Exception:  # stored locally; the hook's owner retries later
                log.exception("%s: after storing %s", site.name, cert.id)
        self.db.add_cert(cert)
        return cert

    def issue(self, site: SiteConfig, ca: str, *, report: TickReport | None = None,
              replaces: str | None = None) -> Cert:
        """A fresh key, a CSR, an order at `ca`; the result is verified and stored as a standby.
        Every order is recorded (the issuance budget counts it, whoever asked)."""
        return self._issue(site, ca, report=report, replaces=replaces)[0]

    def _issue(self, site: SiteConfig, ca: str, *, report: TickReport | None = None,
               replaces: str | None = None,
               cancelled: Callable[[], bool] = lambda: False,
               seen: frozenset[str] | None = None) -> tuple[Cert, int]:
        if ca not in self.issuers:
            raise IssuanceError(f"CA {ca!r} has no issuer configured")
        key = keys.generate(site.key_type)
        csr = keys.csr_pem(key, site.domains)
        issuer = self.issuers[ca](site)
        # a deadline is physical time for network work, not the engine's (maybe moved) clock;
        # the order history (budget, backoff) is on the engine's clock like every other record
        deadline = utcnow() + timedelta(seconds=self.config.daemon.issue_timeout)
        started = time.monotonic()
        order_id = self.db.start_order(site.name, ca, self.clock())
        if seen is not None:  # under our pending order nobody else orders it: re-check
            # by identity, not by time: a certificate is `created` before its row commits
            # (it is sealed in between), so a decision read between the two would miss it
            fresh = [c.id for c in self.db.certs(site.name) if c.ca == ca and c.id not in seen]
            if fresh:
                self.db.drop_order(order_id)
                raise OrderInFlight(f"{site.name}: {', '.join(fresh)} from {ca} was stored since "
                                    "the decision (another controller's order): not ordered again")
        cap = self.config.cas[ca].max_orders_per_hour if ca in self.config.cas else None
        if cap is not None:  # controllers filling the same room at once: the earliest rows win
            since = self.clock() - RATE_WINDOW  # as hold(): an order an hour old is out
            ahead = [o for o in self.db.orders(ca=ca, since=since)
                     if o.id <= order_id and o.started > since]
            if len(ahead) > cap:
                self.db.drop_order(order_id)
                raise OrderInFlight(f"{site.name}: {ca} has {len(ahead) - 1} orders in the last "
                                    f"hour (max_orders_per_hour = {cap}): not ordered now")
        try:
            issued = issuer.issue(csr, deadline=deadline, replaces=replaces)
            if cancelled():
                raise TransientIssuanceError(
                    f"CA {ca}: the order outlasted its deadline of "
                    f"{self.config.daemon.issue_timeout:.0f}s; its result is discarded")
            cert = self.store_cert(site, ca, leaf_pem=issued.leaf_pem, chain_pem=issued.chain_pem,
                                   key_pem=keys.key_pem(key), source=f"CA {ca}",
                                   alt_chains_pem=issued.alt_chains_pem, fresh_key=True,
                                   until=started + self.config.daemon.issue_timeout)
        except BaseException as exc:
            self.db.finish_order(order_id, self.clock(), "failed", reason=str(exc)[:2000],
                                 transient=isinstance(exc, (TransientIssuanceError, OSError)))
            raise
        self.db.finish_order(order_id, self.clock(), "issued", cert_id=cert.id)
        self.record(report, site.name, EventKind.ISSUED,
                    f"issued {cert.id} from {ca}, expires {cert.not_after:%Y-%m-%d %H:%M}Z",
                    cert=cert.id, ca=ca, serial=cert.serial, seconds=round(time.monotonic() - started, 3))
        short = policy.unprotected(cert, site, interval=self.config.daemon.interval,
                                   issue_timeout=self.config.daemon.issue_timeout)
        if short:
            self.record(report, site.name, EventKind.SHORT_LIFETIME, f"{cert.id}: {short}", cert=cert.id,
                        ca=ca)
        return cert, order_id

    def order(self, site: SiteConfig, ca: str, *, replaces: str | None = None,
              report: TickReport | None = None,
              cancelled: Callable[[], bool] = lambda: False,
              seen: frozenset[str] | None = None) -> Cert | None:
        """One order, start to end, never raising: issue, then prove the new certificate usable
        as a standby (every check) before it counts. A certificate that comes out unusable
        (chain, trust, key, names) is kept but marks the order "unusable", which backs the CA
        off for this site; `standby_unusable` is said once per streak."""
        try:
            cert, order_id = self._issue(site, ca, report=report, replaces=replaces,
                                         cancelled=cancelled, seen=seen)
        except OrderInFlight as exc:  # another fleet controller orders it: not a failure
            log.info("%s", exc)
            return None
        except (CertFailoverError, OSError) as exc:
            self.record(report, site.name, EventKind.ISSUANCE_FAILED, f"could not issue from {ca}: {exc}",
                        ca=ca, transient=isinstance(exc, (TransientIssuanceError, OSError)))
            return None
        health = self.check_site(site, [cert])[cert.id]
        if health.healthy:
            return cert
        why = "; ".join(health.reasons(Severity.FAIL))
        earlier = [o for o in self._recent_orders(ca) if o.site == site.name and o.id != order_id
                   and o.finished is not None]
        self.db.finish_order(order_id, self.clock(), "unusable", reason=why, cert_id=cert.id)
        last = max(earlier, key=lambda o: (o.finished, o.id), default=None)
        if last is None or last.outcome != "unusable":
            self.record(report, site.name, EventKind.STANDBY_UNUSABLE,
                        f"new certificate {cert.id} from {ca} is unusable: {why}; backing off "
                        f"{ca} for this site", cert=cert.id, ca=ca, reason=why)
        else:
            log.warning("%s: new certificate %s from %s is unusable again: %s", site.name,
                        cert.id, ca, why)
        return None

    def _recent_orders(self, ca: str) -> list[Order]:
        """The CA's orders within the budget's window and the CA rate's hour (the history
        that can matter)."""
        return self.db.orders(ca=ca, since=self.clock() - max(self.budget.window, RATE_WINDOW))

    def run_job(self, job: Job, cancelled: Callable[[], bool]) -> Outcome:
        """The background workers' runner (see issuance.Workers)."""
        site = self.config.site(job.site)
        cert = self.order(site, job.ca, replaces=job.replaces, cancelled=cancelled,
                          seen=job.seen)
        last = max((o for o in self._recent_orders(job.ca) if o.site == job.site),
                   key=lambda o: o.id, default=None)
        transient = bool(last and last.transient)
        msg = cert.id if cert else (last.reason if last else "no order recorded")
        return Outcome(job, cert is not None, transient and cert is None, self.clock(), msg)

    def abandon_job(self, job: Job, deadline: float) -> Outcome:
        """An order that outlasted its deadline: it counts as a transient failure of the CA."""
        why = f"CA {job.ca}: no answer within {deadline:.0f}s; order abandoned"
        for o in self._recent_orders(job.ca):
            if o.site == job.site and o.outcome == "pending":
                self.db.finish_order(o.id, self.clock(), "failed", reason=why, transient=True)
        self.record(None, job.site, EventKind.ISSUANCE_FAILED, f"could not issue from {job.ca}: {why}",
                    ca=job.ca, transient=True)
        return Outcome(job, False, True, self.clock(), why)

    def start_workers(self, on_done: Callable[[Outcome], None]) -> Workers:
        """Run orders in the background from now on (the daemon)."""
        self.orders = Workers(self.run_job, deadline=self.config.daemon.issue_timeout + 5.0,
                              on_done=on_done, abandoned=self.abandon_job)
        return self.orders

    # -- one tick --------------------------------------------------------------------------
    def tick(self, sites: Iterable[str] | None = None, *, replenish: bool = True,
             run: RunPlan | None = None) -> TickReport:
        """Check, decide, deploy, then replenish for `sites` (None: all).

        `run=None` runs every check of every certificate (everything due). The daemon passes
        the scheduler's plan instead (see check_site). Switches happen before any order is
        placed; with background workers (the daemon) orders do not wait at all, and each CA
        is asked only when the issuance budget lets it (see issuance.hold).
        """
        self._materials = {}
        try:
            return self._tick(sites, replenish=replenish, run=run)
        finally:
            self._materials = None

    def _tick(self, sites: Iterable[str] | None, *, replenish: bool,
              run: RunPlan | None) -> TickReport:
        report = TickReport()
        names = None if sites is None else set(sites)
        wanted = [s for s in self.config.sites if names is None or s.name in names]
        # two speeds: decide and switch on the local checks (and stored network findings)
        # first, then run the checks that wait on responders and decide again
        fast, slow = self._split(wanted, run)
        decisions = self._decide_all(wanted, report, fast)
        self._apply(decisions, report)
        if slow:
            # a site whose switch just failed is not tried again in the same tick
            failed = {e.site for e in report.events if e.kind in ("rollback", "deploy_failed")}
            slow_sites = {self._site_of(c) for c in slow} - failed
            again_sites = [s for s in wanted if s.name in slow_sites]
            second = dict(self._decide_all(again_sites, report, slow))
            self._apply(list(second.items()), report)
            decisions = [(s, second.get(s, d)) for s, d in decisions]
            done = {s.name: d for s, d in decisions}
            report.decisions = list(done.values())
        if replenish:
            book = OrderBook()
            again = []
            # no issuance for a site whose chain was switched in this tick
            switched = {e.site for e in report.events if e.kind == EventKind.CHAIN_SWITCH}
            # the most urgent first: a CA's rate (max_orders_per_hour) may leave room for few
            for site, d in sorted(decisions, key=lambda sd: _urgency(sd[1])):
                if site.name in switched:
                    continue
                try:
                    got = bool(d.need) and self._replenish(site, d, report, book) > 0
                except Exception as exc:  # noqa: BLE001 - logged with its traceback
                    self._site_failed(site, "replenishing", exc)
                    continue
                if got and \
                        (d.target is None and d.active is None) and self.orders is None:
                    again.append(site)
            if again:  # first run: activate what was just issued in the same tick
                self._apply(self._decide_all(again, report, run), report)
        return report

    @staticmethod
    def _site_of(cert_id: str) -> str:
        return cert_id.split("/", 1)[0]

    def _split(self, sites: Sequence[SiteConfig], run: RunPlan | None) -> tuple[RunPlan, RunPlan]:
        """The plan for the fast pass (local checks) and for the slow pass (network checks)."""
        if run is None:
            everything = frozenset(k.name for k in self.checks)
            run = {c.id: everything for s in sites for c in self.db.certs(s.name)}
        slow_checks = self.slow_checks
        fast = {cid: v - slow_checks for cid, v in run.items()}
        slow = {cid: v & slow_checks for cid, v in run.items() if v & slow_checks}
        return fast, slow

    def _decide_all(self, sites: Sequence[SiteConfig], report: TickReport,
                    run: RunPlan | None = None) -> list[tuple[SiteConfig, Decision]]:
        margin = timedelta(seconds=self.config.daemon.expiry_margin)

        def one(site: SiteConfig) -> tuple[SiteConfig, Decision | None, dict[str, Health]]:
            try:
                certs = self.db.certs(site.name)
                revoked = self.db.revoked(site.name)
                health = self.check_site(site, certs, run=run, revoked=revoked)
                # check_site adds what it records to `revoked`: one query serves both
                distrusted = frozenset(self.db.distrusted(site.name))
                d = policy.decide(site, certs, health, distrusted=distrusted,
                                  now=self.clock(), expiry_margin=margin,
                                  revoked=frozenset(revoked))
                return site, dataclasses.replace(d, seen=frozenset(c.id for c in certs)), health
            except Exception as exc:  # noqa: BLE001 - one site never stops another (logged)
                self._site_failed(site, "deciding", exc)
                return site, None, {}

        out = []
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(sites) or 1))) as pool:
            for site, d, health in pool.map(one, sites):
                report.health.update(health)
                if d is not None:
                    report.decisions.append(d)
                    out.append((site, d))
        return out

    def _site_failed(self, site: SiteConfig, step: str, exc: Exception) -> None:
        """Log a site's unexpected failure with its traceback; say it once per message."""
        log.exception("site %s: %s failed", site.name, step)
        message = f"{step} failed: {type(exc).__name__}: {exc}"
        if self._site_errors.get(site.name) != message:
            self._site_errors[site.name] = message
            self.record(None, site.name, EventKind.SITE_ERROR, message, step=step)

    def _apply(self, decisions: Sequence[tuple[SiteConfig, Decision]], report: TickReport, *,
               now_or_never: bool = False) -> None:
        """Deploy the decided switches, one batch per server. A switch that failed to the same
        target waits out its backoff (backoff.Backoff) unless `now_or_never` (an operator's)."""
        batches: dict[str | None, list[Switch]] = {}
        chain_switch: dict[str, str] = {}  # site -> why its served chain changes
        now = self.clock()

        def add(server: str | None, sw: Switch) -> None:
            wait = None if now_or_never else self.switch_hold.waiting(
                sw.site.name, sw.target.path, now.timestamp())
            if wait is None:
                batches.setdefault(server, []).append(sw)
            else:
                chain_switch.pop(sw.site.name, None)
                log.info("site %s: the switch to %s failed %d time(s) in a row; next try at %sZ",
                         sw.site.name, sw.target.id, wait.failures,
                         f"{datetime.fromtimestamp(wait.at, UTC):%H:%M:%S}")

        for site, d in decisions:
            for cid in d.retire:
                self.db.set_state(cid, CertState.RETIRED)
                self.record(report, site.name, EventKind.RETIRED, f"retired {cid}", cert=cid)
            if d.action is Action.NONE_HEALTHY:  # said once per situation, not every tick
                if self._none_said.get(site.name) != d.reason:
                    self._none_said[site.name] = d.reason
                    self.record(report, site.name, EventKind.NONE_HEALTHY, d.reason, active=d.active)
            else:
                self._none_said.pop(site.name, None)
            if d.target is None:
                sw = self._chain_switch(site, d, chain_switch)
                if sw is not None:
                    add(site.server, sw)
                continue
            target = self.db.cert(d.target)
            previous = self.db.cert(d.active) if d.active else None
            assert target is not None
            add(site.server, Switch(site, self._with_chain(site, target), previous))
        by_site = {s.name: d for s, d in decisions}
        for server, switches in batches.items():
            try:
                results = {r.site: r for r in self.deploy(server, switches)}
            except Exception as exc:  # a broken adapter fails only these switches
                if isinstance(exc, CertFailoverError):  # a known, named failure: no traceback
                    log.error("deploy to server %s failed: %s", server, exc)
                else:
                    log.exception("deploy to server %s failed", server)
                results = {sw.site.name: SwitchResult(sw.site.name, False, False,
                                                      f"deploy raised {type(exc).__name__}: {exc}",
                                                      0.0) for sw in switches}
            for sw in switches:
                r = results.get(sw.site.name)
                d = by_site[sw.site.name]
                if r is not None and r.ok:
                    self.switch_hold.forget(sw.site.name)
                if r is not None and r.ok and sw.site.name in chain_switch:
                    self.record(report, sw.site.name, EventKind.CHAIN_SWITCH,
                                f"{sw.target.id} now serves {chain_switch[sw.site.name]}; same "
                                f"leaf and key, verified by handshake in {r.seconds:.2f}s",
                                cert=sw.target.id, path=sw.target.path,
                                reason=chain_switch[sw.site.name], seconds=r.seconds)
                elif r is not None and r.ok:
                    self.db.set_active(sw.site.name, sw.target.id)
                    kind = EventKind.FAILOVER if d.action is Action.FAILOVER else EventKind.ACTIVATED
                    self.record(report, sw.site.name, kind,
                                f"{'failed over' if kind == 'failover' else 'activated'} to "
                                f"{sw.target.id} ({d.reason}); verified by handshake in {r.seconds:.2f}s"
                                # where: "at" the endpoints, or "on" the fleet's hosts
                                f" {r.message.removeprefix('verified ')}".rstrip(),
                                cert=sw.target.id, previous=sw.previous.id if sw.previous else None,
                                reason=d.reason, seconds=r.seconds)
                else:
                    msg = r.message if r else "deploy returned no result"
                    at = self.clock().timestamp()
                    w = self.switch_hold.failed(sw.site.name, sw.target.path, at)
                    self.record(report, sw.site.name, EventKind.ROLLBACK if r and r.rolled_back else EventKind.DEPLOY_FAILED,
                                f"could not activate {sw.target.id}: {msg} (failure {w.failures} "
                                f"in a row; tried again in {_span(w.at - at)})", cert=sw.target.id,
                                failures=w.failures, retry_in=w.at - at)

    def _served_chain(self, site: SiteConfig, cert: Cert, *, load: bool = True
                      ) -> tuple[ServedChain, int | None] | None:
        """Which stored chain of `cert` to serve (policy.choose_chain) and the one served now;
        None when that cannot be judged (logged: the stored chain is used as before). In a
        tick, `load=False` judges only a certificate some check of which ran (nothing due:
        no vault read); the material is loaded once per tick either way."""
        memo = self._materials
        if memo is not None and cert.id not in memo and not load:
            return None
        try:
            if memo is None or cert.id not in memo:
                self.material(cert)
            leaf, stored = self._stored_chains[cert.id]
            choice, served, _ = chains.pick(self.chains, cert, stored, leaf, site,
                                            self.clock(), self.served_target(site.name))
        except Exception:  # judging chains never stops a switch (logged)
            log.exception("site %s: cannot judge the chains of %s", site.name, cert.id)
            return None
        return choice, served

    def _with_chain(self, site: SiteConfig, cert: Cert) -> Cert:
        """`cert` with the path of the chain to serve (its own when no chain is better)."""
        got = self._served_chain(site, cert)
        if got is None or got[0].index is None:
            return cert
        return dataclasses.replace(cert, path=str(chain_dir(Path(cert.path), got[0].index)))

    def _chain_switch(self, site: SiteConfig, d: Decision,
                      why: dict[str, str]) -> Switch | None:
        """A switch of the active certificate to another of its chains, when the served one
        no longer satisfies every required anchor and another does (docs/chains.md)."""
        if d.action is not Action.KEEP or d.active is None:
            return None
        active = self.db.cert(d.active)
        got = self._served_chain(site, active, load=False) if active is not None else None
        if active is None or got is None:
            return None
        choice, served = got
        if choice.index is None or served is None or choice.index == served:
            return None
        why[site.name] = choice.reason
        target = dataclasses.replace(active, path=str(chain_dir(Path(active.path), choice.index)))
        current = dataclasses.replace(active, path=str(chain_dir(Path(active.path), served)))
        return Switch(site, target, current)

    def hold(self, site: SiteConfig, ca: str, book: OrderBook) -> Hold | None:
        """Why no order goes from `site` to `ca` now (see issuance.hold, and a CA whose new
        certificates a required root program would not trust); `book` caches what that costs
        a query, per CA, for one tick."""
        caa_forbids = self.caa(site.name, ca) if self.caa is not None else None
        if caa_forbids:
            return Hold("caa_forbidden", None, caa_forbids)
        if ca not in book.dead:
            book.dead[ca] = self.cannot_issue(ca)
        dead = [why for program, why in book.dead[ca].items() if program in programs(site.trust)]
        if dead:
            return Hold("ca_dead", None, dead[0])
        now = self.clock()
        if ca not in book.orders:
            rows = self._recent_orders(ca)
            # orders queued here but not started yet (read after the rows: a job that starts
            # in between has a pending row and is not counted twice)
            busy = self.orders.busy() if self.orders is not None else set()
            pending = {o.site for o in rows if o.outcome == "pending"}
            queued = sum(1 for s, c in busy if c == ca and s not in pending)
            book.orders[ca] = CAOrders(rows, queued=queued)
        cap = self.config.cas[ca].max_orders_per_hour if ca in self.config.cas else None
        return hold(book.orders[ca], site.name, ca, now, self.budget, ca_rate=cap)

    def _replenish(self, site: SiteConfig, d: Decision, report: TickReport,
                   book: OrderBook) -> int:
        """Order what the decision needs from CAs the budget allows. Inline (no workers): the
        orders run now and the count is what came out usable; with workers: what was queued."""
        got = 0
        held: list[tuple[str, Hold]] = []
        busy = self.orders.busy() if self.orders is not None else set()
        for ca in d.replenish_from:
            if got >= d.need:
                break
            why = Hold("in_flight", None, "an order is queued") if (site.name, ca) in busy \
                else self.hold(site, ca, book)
            if why is not None:
                held.append((ca, why))
                continue
            replaces = self._replaces(site, ca, report)
            if self.orders is not None:
                queued = self.orders.submit(Job(site.name, ca, replaces, d.seen))
                got += int(queued)
                if queued and ca in book.orders:  # counts against the CA's rate this tick
                    book.orders[ca].queued += 1
            else:
                got += int(self.order(site, ca, replaces=replaces, report=report) is not None)
                book.orders.pop(ca, None)  # it ran: its outcome matters to the next site
        if got >= d.need or (self.orders is not None and got):
            self._missing.pop(site.name, None)
            return got
        if held and all(h.kind in ("in_flight", "backoff", "ca_backoff") for _, h in held) \
                and len(held) == len(d.replenish_from):
            return got  # waiting on orders, or backing off: said when they failed
        # said once per situation: a site with no CA left to ask is not news every tick
        situation = (d.need - got, d.replenish_from, tuple((ca, h.kind) for ca, h in held))
        if self._missing.get(site.name) != situation:
            self._missing[site.name] = situation
            if not d.replenish_from:
                text = "no CA left to ask (the others are the active one's or distrusted)"
            elif held:
                text = "; ".join(f"{ca}: {h.message}" for ca, h in held)
            else:
                text = "will retry"
            self.record(report, site.name, EventKind.STANDBY_MISSING,
                        f"needs {d.need} new certificate(s), got {got}; {text}",
                        need=d.need, got=got, candidates=list(d.replenish_from),
                        held={ca: h.kind for ca, h in held})
        return got

    def reconcile(self) -> None:
        """Make the store agree with the live links (what the servers were told to serve)."""
        for site in self.config.sites:
            target = self.vault.live_target(site.name)
            if target is None:
                continue
            certs = self.db.certs(site.name)
            match = next((c for c in certs if Path(c.path).resolve() == base_dir(target)), None)
            active = next((c for c in certs if c.state is CertState.ACTIVE), None)
            if match is not None and (active is None or active.id != match.id):
                self.db.set_active(site.name, match.id)
                self.record(None, site.name, EventKind.RECONCILED,
                            f"store now agrees with live link: {match.id} is active",
                            cert=match.id, previous=active.id if active else None)

    def _replaces(self, site: SiteConfig, ca: str, report: TickReport) -> str | None:
        """The ARI id of a certificate from `ca` that its CA asked to replace (RFC 9773 `replaces`)."""
        for c in self.db.certs(site.name):
            h = report.health.get(c.id)
            if c.ca == ca and h is not None:
                for f in h.findings:
                    if f.replace and f.ari_id:
                        return f.ari_id
        return None

    # -- operator actions ------------------------------------------------------------------
    def failover(self, site_name: str, *, to: str | None = None,
                 reason: str = "operator requested failover") -> TickReport:
        """Switch now to `to` or the best healthy standby (still verified and rolled back if wrong)."""
        site = self.config.site(site_name)
        report = TickReport()
        certs = self.db.certs(site.name)
        health = self.check_site(site, certs)
        report.health.update(health)
        active = next((c for c in certs if c.state is CertState.ACTIVE), None)
        if to is not None:
            choice = next((c for c in certs if c.id == to), None)
            if to in self.db.revoked(site.name):
                raise InputError(f"{to} is revoked; a revoked certificate is never served again")
            if choice is None:
                gone = self.db.cert(to)
                if gone is not None and gone.site == site.name:
                    raise InputError(f"{to} is retired ({gone.state.value}); it is not served again")
                raise InputError(f"no certificate {to!r} for site {site.name}")
            if choice.id in self.db.revoked(site.name):
                raise InputError(f"{to} is revoked; a revoked certificate is never served again")
            if not health[choice.id].healthy:
                raise InputError(f"{to} is not healthy: {'; '.join(health[to].reasons())}")
        else:
            pool = [c for c in certs if active is None or c.id != active.id]
            ranked = sorted((c for c in pool if health[c.id].healthy),
                            key=lambda c: policy._rank(c, health[c.id], site, self.clock(),
                                                       active.ca if active else None))
            if not ranked:
                raise InputError(f"site {site.name} has no healthy standby to fail over to")
            choice = ranked[0]
        d = Decision(site.name, Action.FAILOVER, active.id if active else None, choice.id, reason)
        report.decisions.append(d)
        self._apply([(site, d)], report, now_or_never=True)
        return report

    def next_switch_retry(self) -> float | None:
        """Seconds until a switch that failed may be tried again (the daemon wakes for it)."""
        return self.switch_hold.next_retry(self.clock().timestamp(), overdue=False)
