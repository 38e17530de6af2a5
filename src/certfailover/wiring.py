"""The composition root: config -> database, vault, checks, issuers, deploy port,
notifications, and the daemon as `certfailover run` starts it (build_daemon).

The only module that knows every concrete adapter; everything else takes ports. It reads the
typed Config only (config.load has validated every table before any of this runs).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from cryptography import x509

from . import deploy
from .caacheck import CAACheck, CAAGate, CAAGateJob, GateSite, SiteVerdict, acme_method
from .checks import Check
from .config import SYSTEM, CAConfig, Config, SiteConfig
from .ct.job import WatchJob
from .ct.watch import Watch
from .daemon import Daemon
from .engine import Engine, IssuerPort, Notify, Switch, SwitchResult
from .errors import StoreError
from .events import EventKind
from .fleet.deployer import FleetDeployer
from .fleet.port import controller_port
from .fleet.share import ControllerShare
from .health import SYSTEM_BUNDLE, BundleStores, StoreTrustCheck, local_checks
from .issuers.acme import AcmeIssuer
from .issuers.challenges import StandaloneSolver, WebrootSolver
from .issuers.dns_settings import DnsChallenge, clean_leftovers, make_solver
from .metrics import Metrics
from .model import Clock, utcnow
from .notify.factory import build as build_routes
from .policy import unprotected
from .revocation.check import CASources, RevocationCheck, RevocationConfig
from .schedule import Scheduler
from .servers.base import ServerAdapter
from .servers.registry import make_adapter
from .sitetrust import programs
from .store.db import SCHEMA_VERSION, Database
from .store.files import atomic_write
from .store.vault import Vault
from .trust.check import ProgramTrustCheck
from .trust.refresh import Refresher

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    config: Config
    db: Database
    vault: Vault
    engine: Engine
    stores: BundleStores
    deployer: ServerDeployer

    def startup(self) -> None:
        """After a crash: finish or undo interrupted activations, then make the store agree."""
        for line in self.deployer.recover():
            log.warning("recovered interrupted activation: %s", line)
        self.engine.reconcile()
        # fleet controllers share the orders table: another one's order in flight is spared
        share = fleet_share(self.engine)
        spare = None if share is None else \
            utcnow() - timedelta(seconds=self.config.daemon.issue_timeout + 60.0)
        if n := self.db.abandon_pending_orders(utcnow(), started_before=spare):
            log.warning("%d order(s) were interrupted by the last stop; they count as failures", n)
        clean_leftovers([s.challenge.dns for s in self.config.sites if s.challenge.dns],
                        self.config.store)  # DNS-01 records of a crashed run


def open_store(config: Config, *, read_only: bool = False) -> tuple[Database, Vault]:
    """The store's database and vault.

    Write mode (default) creates the layout, makes the store private (0700 directories, 0600
    SQLite files) and migrates the schema. `read_only` (status, events, pins) creates and
    changes nothing: a SQLite database is opened with `mode=ro` (`immutable` when even that is
    impossible, e.g. on a read-only mount without -wal/-shm files); an older schema is
    migrated only if the store can be written, else a StoreError says so. A damaged SQLite
    file is a StoreError naming it, in both modes."""
    vault = Vault(config.store)
    sqlite_path = _sqlite_file(config.database)
    if not read_only:
        vault.ensure()
        if sqlite_path is not None:
            _private_sqlite(sqlite_path)
        if sqlite_path is not None and sqlite_path.stat().st_size > 0:
            ro = _sqlite_read_only(sqlite_path)  # a damaged file is named before any write
            try:
                _integrity(ro, sqlite_path)
            finally:
                ro.engine.dispose()
        db = Database(config.database)
        db.migrate()
        if sqlite_path is not None:
            _private_sqlite(sqlite_path)  # the -wal/-shm files the first connection created
        return db, vault
    vault.check()
    if sqlite_path is None:
        db = Database(config.database)
    else:
        if not sqlite_path.is_file():
            raise StoreError(f"{sqlite_path}: no certfailover database here (yet): `certfailover "
                             "issue`, `import` or `run` creates it")
        db = _sqlite_read_only(sqlite_path)
        _integrity(db, sqlite_path)
    where = sqlite_path or config.database
    try:
        current = db.version()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{where}: cannot read the database: {_reason(exc)}") from exc
    if current < SCHEMA_VERSION:
        try:  # an old store is upgraded by any command that can write it
            Database(config.database).migrate()
        except StoreError as exc:
            raise StoreError(
                f"{where}: the store's schema version {current} is older than this "
                f"certfailover's ({SCHEMA_VERSION}) and it cannot be upgraded here (read-only?): "
                "run `certfailover run --once` (or any writing command) with write access "
                f"first. ({_reason(exc.__cause__ or exc)})") from exc
    elif current > SCHEMA_VERSION:
        raise StoreError(f"{where}: store schema version {current} is newer than this "
                         f"certfailover ({SCHEMA_VERSION}); upgrade certfailover")
    return db, vault


def _sqlite_file(url: str) -> Path | None:
    """The file of a plain SQLite URL (sqlite:///path), else None (memory, URI form, other DB)."""
    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:" \
            or u.database.startswith("file:") or u.query:
        return None
    return Path(u.database)


def _private_sqlite(path: Path) -> None:
    """state.db and its -wal/-shm are 0600: created so (SQLite gives -wal/-shm the database
    file's mode), and an existing store's files are tightened."""
    try:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if p.exists() and p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
    except OSError as exc:
        raise StoreError(f"{exc.filename or path}: cannot create or protect the database "
                         f"file: {exc.strerror}") from exc


def _sqlite_read_only(path: Path) -> Database:
    base = f"sqlite:///file:{quote(str(path.absolute()))}?mode=ro&uri=true"
    db = Database(base)
    try:
        with db.engine.connect():
            return db
    except sa.exc.OperationalError:
        # a WAL database on read-only media without its -wal/-shm files: nobody can be
        # writing it, so reading it as immutable is safe
        db.engine.dispose()
        return Database(f"sqlite:///file:{quote(str(path.absolute()))}?mode=ro&immutable=1&uri=true")


def _integrity(db: Database, path: Path) -> None:
    """A damaged page anywhere in the SQLite file is found now, named, and nothing is written."""
    try:
        with db.engine.connect() as conn:
            problems = [str(r[0]) for r in conn.execute(sa.text("PRAGMA quick_check"))]
    except sa.exc.DatabaseError as exc:
        reason = _reason(exc)
        if "malformed" not in reason and "not a database" not in reason:
            raise StoreError(f"{path}: cannot open the database: {reason}") from exc
        problems = [reason]
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"{path}: cannot open the database: {_reason(exc)}") from exc
    if problems != ["ok"]:
        raise StoreError(
            f"{path}: the database is damaged ({'; '.join(problems[:3])}); nothing was changed. "
            "Restore it from a backup (`sqlite3 state.db .recover` may save most of it); the "
            "certificates and keys in the archive are not affected")


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]


def build_checks(config: Config, stores: BundleStores) -> list[Check]:
    """Every check the engine runs: the local ones, revocation (CRL, OCSP, ARI), root-program
    trust."""
    revocation = RevocationCheck(RevocationConfig(
        cas={name: CASources(crl_urls=ca.crl_urls, ari_url=ca.ari_url, directory_url=ca.directory,
                             require_crl_sign=ca.crl_sign_required)
             for name, ca in config.cas.items()},
        ca_bundle=fetch_bundle(config),
        cache_dir=config.store / "cache" / "crl",
    ))
    return [*local_checks(stores), revocation, ProgramTrustCheck(path=config.trust.snapshot)]


def fetch_bundle(config: Config) -> str | None:
    """Trust anchors for https fetches of revocation data: the system's plus each CA's bundle."""
    extra = [ca.ca_bundle for ca in config.cas.values() if ca.ca_bundle is not None]
    if not extra:
        return None
    parts = [SYSTEM_BUNDLE.read_bytes()] if SYSTEM_BUNDLE.is_file() else []
    parts += [p.read_bytes() for p in extra]
    path = config.store / "cache" / "fetch-ca-bundle.pem"
    atomic_write(path, b"\n".join(parts))
    return str(path)


def issuer_factory(config: Config, vault: Vault, ca: CAConfig) -> Callable[[SiteConfig], IssuerPort]:
    @cache
    def for_challenge(kind: str, webroot: str | None, host: str, port: int,
                      dns: DnsChallenge | None = None) -> IssuerPort:
        solver = make_solver(dns, config.store) if dns is not None \
            else WebrootSolver(Path(webroot)) if kind == "http-01-webroot" and webroot \
            else StandaloneSolver(host, port)
        return AcmeIssuer(
            ca.name, ca.directory, email=ca.email, account_key_path=vault.account_key_path(ca.name),
            solver=solver, eab_kid=ca.eab_kid,
            eab_hmac_key=ca.eab_hmac_key.value if ca.eab_hmac_key else None,
            ca_bundle=ca.ca_bundle, preferred_chain=ca.preferred_chain)

    def make(site: SiteConfig) -> IssuerPort:
        ch = site.challenge
        return for_challenge(ch.type, str(ch.webroot) if ch.webroot else None, ch.listen_host,
                             ch.listen_port, ch.dns)

    return make


C = TypeVar("C")


def _the(checks: Iterable[Check], kind: type[C]) -> C:
    return next(c for c in checks if isinstance(c, kind))


class ChainValidator:
    """deploy.Validate: the served chain must be trusted where its site requires, judged by the
    very checks the engine runs (the chain check's PEM bundles, the trust check's root
    programs and snapshot), so a certificate the checks pass is never rolled back for trust
    and one they fail is never verified."""

    def __init__(self, sites: Sequence[SiteConfig], chain: StoreTrustCheck,
                 trust: ProgramTrustCheck, clock: Clock) -> None:
        self.sites, self.chain, self.trust, self.clock = sites, chain, trust, clock

    def __call__(self, served: list[x509.Certificate], sni: str) -> str | None:
        site = next((s for s in self.sites if sni in s.domains), None)
        trust = site.trust if site else (SYSTEM,)
        now, leaf, chain = self.clock(), served[0], served[1:]
        errors = [f"{n}: {e}" for n, e in self.chain.validate(leaf, chain, trust, sni, now)
                  if e is not None]
        names = programs(trust)
        if names:
            errors += self.trust.untrusted(leaf, chain, programs=names, at=now, name=sni)
        return "; ".join(errors) or None


class ServerDeployer:
    """The engine's deploy port over the real adapters; also finishes interrupted activations."""

    def __init__(self, config: Config, vault: Vault, validate: deploy.Validate) -> None:
        self.config, self.vault, self.validate = config, vault, validate
        self.adapters: dict[str, ServerAdapter] = {
            name: make_adapter(dict(s.spec)) for name, s in config.servers.items()}

    def dual_family(self, site: SiteConfig) -> str | None:
        """"ec" or "rsa" when another site serves the same name on the same server with the other
        key family (an ECDSA + RSA pair): the handshake must then ask for this one."""
        family = "rsa" if site.key_type.startswith("rsa") else "ec"
        for other in self.config.sites:
            if other.name != site.name and other.server == site.server and other.sni == site.sni \
                    and ("rsa" if other.key_type.startswith("rsa") else "ec") != family:
                return family
        return None

    def __call__(self, server: str | None, switches: Sequence[Switch]) -> list[SwitchResult]:
        if server is None:  # no server: the live link is the deployment (e.g. a file watcher)
            out = []
            for sw in switches:
                self.vault.point_live(sw.site.name, Path(sw.target.path))
                out.append(SwitchResult(sw.site.name, True, False, "live link updated (no server)", 0.0))
            return out
        batch = [deploy.Activation(site=sw.site.name, target=Path(sw.target.path),
                                   expected_sha256=sw.target.sha256, endpoints=sw.site.endpoints,
                                   sni=sw.site.sni, key_type=self.dual_family(sw.site))
                 for sw in switches]
        results = deploy.activate(self.vault, self.adapters[server], batch, validate=self.validate,
                                  verify_timeout=self.config.daemon.verify_timeout)
        return [SwitchResult(r.site, r.ok, r.rolled_back, r.message, r.seconds) for r in results]

    def recover(self) -> list[str]:
        return [f"{r.site}: {r.action}: {r.message}" for r in
                deploy.recover(self.vault, self.adapters, validate=self.validate,
                               verify_timeout=self.config.daemon.verify_timeout)]


def build(config: Config, *, clock: Clock = utcnow, notify: Notify | None = None) -> Runtime:
    """The engine and its ports; `notify` replaces the `[notify]` notifiers (tests, drills)."""
    db, vault = open_store(config)
    stores = BundleStores()
    checks = build_checks(config, stores)
    gate = caa_gate(config)
    if gate is not None:
        checks.append(CAACheck(gate))
    validate = ChainValidator(config.sites, _the(checks, StoreTrustCheck),
                              _the(checks, ProgramTrustCheck), clock)
    deployer = ServerDeployer(config, vault, validate)
    engine = Engine(
        config, db, vault,
        checks=checks,
        issuers={name: issuer_factory(config, vault, ca) for name, ca in config.cas.items()},
        deploy=controller_port(config, vault, db) or deployer,  # a fleet controller publishes
        notify=notify if notify is not None else build_routes(config.notify),
        clock=clock,
    )
    engine.caa = gate
    share = fleet_share(engine)
    if share is not None:  # seal each new certificate for the other controllers at once
        engine.on_stored, engine.on_missing = share.seal_one, share.fetch_one
        engine.served_target = share.served_target  # the chain the agents were told to serve
    return Runtime(config, db, vault, engine, stores, deployer)


def fleet_share(engine: Engine) -> ControllerShare | None:
    """This controller's share of the sites when the engine publishes to a fleet."""
    port = engine.deploy
    if isinstance(port, FleetDeployer) and isinstance(port.fence, ControllerShare):
        return port.fence
    return None


def caa_gate(config: Config) -> CAAGate | None:
    """The CAA gate of `[caa]` (None without it), refreshed once now within one `[caa] timeout`
    in all (a dead resolver or directory delays start-up that long at most; what was not
    reached is unknown until the daemon's next pass, every `[caa] interval`)."""
    if config.caa is None:
        return None
    gate = CAAGate(config.caa, [GateSite(s.name, s.domains, s.cas, acme_method(s.challenge.type))
                                for s in config.sites],
                   {n: (ca.directory, str(ca.ca_bundle) if ca.ca_bundle else True)
                    for n, ca in config.cas.items()})
    gate.refresh(budget=config.caa.timeout)
    return gate


def build_daemon(engine: Engine, config: Config, *, interval: float,
                 metrics_listen: tuple[str, int] | None = None, scheduled: bool = True,
                 rng: random.Random | None = None, clock: Clock | None = None) -> Daemon:
    """The daemon as `certfailover run` starts it: `[schedule]` intervals, `[trust]` refresh,
    notifications and orders in the background, metrics on `metrics_listen` or `[metrics]
    listen` (neither: off). Unscheduled (`run --once`): orders run inline, the tick waits."""
    scheduler = Scheduler(rng=rng or random.Random(), intervals=config.schedule) \
        if scheduled else None
    listen = metrics_listen or config.metrics.listen
    metrics = Metrics() if listen is not None else None
    d = Daemon(engine, interval=interval, scheduler=scheduler, metrics=metrics, clock=clock)
    refresher = Refresher(config.trust)
    d.refresher = refresher if refresher.enabled else None
    sites = {s.name: s for s in config.sites}
    for c in engine.db.certs():  # said at start too: the schedule cannot protect these
        site = sites.get(c.site)
        why = site and unprotected(c, site, interval=interval,
                                   issue_timeout=config.daemon.issue_timeout)
        if why:
            log.warning("%s: %s", c.id, why)
    d.notify_in_background()
    share = fleet_share(engine)
    if share is not None:  # a fleet controller ticks its share of the sites only
        if scheduled:
            d.share_in_background(share)
        else:
            d.share = share
    if scheduled:
        d.orders_in_background()
        d.checks_in_background()
        if config.ct is not None:  # the CT watch: its own thread, every [ct] interval
            watch = Watch(config.ct, engine.db, {s.name: s.domains for s in config.sites},
                          record=lambda site, kind, msg, data: engine.record(
                              None, site, kind, msg, **data),
                          site_cas={s.name: s.cas for s in config.sites})
            d.ct_watch = WatchJob(watch, interval=config.ct.interval, on_poll=lambda results: (
                d.wake() if any(r.distrusted for r in results) else None),
                active=share.is_leader if share is not None else lambda: True).start()
    if isinstance(engine.caa, CAAGate):  # a CA that CAA forbids: said at start, on change
        gate = engine.caa

        def said(v: SiteVerdict, _before: SiteVerdict | None) -> None:
            if v.allowed is False:
                engine.record(None, v.site, EventKind.CAA_FORBIDS, v.reason, ca=v.ca)
        for v in gate.current():
            said(v, None)
        gate.on_change = said
        if scheduled:
            d.caa_job = CAAGateJob(gate).start()
    if metrics is not None and listen is not None:
        d.metrics_server = metrics.serve(*listen)
        log.info("metrics at %s", d.metrics_server.url)
    return d
