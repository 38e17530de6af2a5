"""Composition root: config -> database, vault, checks, issuers, deploy port, notifications.

The only module that knows every concrete adapter. Everything else takes ports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from cryptography import x509

from .checks import Check
from .config import CAConfig, Config, SiteConfig
from .engine import Engine, IssuerPort, Notify, Switch, SwitchResult
from .errors import StoreError
from .health import BundleStores, StoreTrustCheck, local_checks
from .model import Clock, utcnow
from .store.db import SCHEMA_VERSION, Database
from .store.vault import Vault

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
        if n := self.db.abandon_pending_orders(utcnow()):
            log.warning("%d order(s) were interrupted by the last stop; they count as failures", n)


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
    checks: list[Check] = list(local_checks(stores))
    checks.extend(extra_checks(config))
    return checks


def extra_checks(config: Config) -> list[Check]:
    """Revocation (CRL, OCSP, ARI) and root-program trust checks."""
    out: list[Check] = []
    from .revocation.check import CASources, RevocationCheck, RevocationConfig
    out.append(RevocationCheck(RevocationConfig(
        cas={name: CASources(crl_urls=ca.crl_urls, ari_url=ca.ari_url, directory_url=ca.directory,
                             require_crl_sign=ca.crl_sign_required)
             for name, ca in config.cas.items()},
        ca_bundle=fetch_bundle(config),
        cache_dir=config.store / "cache" / "crl",
    )))
    from .trust.check import ProgramTrustCheck
    out.append(ProgramTrustCheck(path=trust_settings(config).snapshot))
    return out


def trust_settings(config: Config) -> Any:
    """The `[trust]` table: which snapshot the checks read, and its scheduled refresh."""
    from .trust.refresh import settings_from_config
    return settings_from_config(config.raw.get("trust", {}), file=str(config.path),
                                store=config.store)


def fetch_bundle(config: Config) -> str | None:
    """Trust anchors for https fetches of revocation data: the system's plus each CA's bundle."""
    extra = [ca.ca_bundle for ca in config.cas.values() if ca.ca_bundle is not None]
    if not extra:
        return None
    from .health import SYSTEM_BUNDLE
    from .store.files import atomic_write
    parts = [SYSTEM_BUNDLE.read_bytes()] if SYSTEM_BUNDLE.is_file() else []
    parts += [p.read_bytes() for p in extra]
    path = config.store / "cache" / "fetch-ca-bundle.pem"
    atomic_write(path, b"\n".join(parts))
    return str(path)


def issuer_factory(config: Config, vault: Vault, ca: CAConfig) -> Callable[[SiteConfig], IssuerPort]:
    from .issuers.acme import AcmeIssuer
    from .issuers.challenges import StandaloneSolver, WebrootSolver

    @cache
    def for_challenge(kind: str, webroot: str | None, host: str, port: int) -> IssuerPort:
        solver = WebrootSolver(Path(webroot)) if kind == "http-01-webroot" and webroot \
            else StandaloneSolver(host, port)
        return AcmeIssuer(
            ca.name, ca.directory, email=ca.email, account_key_path=vault.account_key_path(ca.name),
            solver=solver, eab_kid=ca.eab_kid,
            eab_hmac_key=ca.eab_hmac_key.value if ca.eab_hmac_key else None,
            ca_bundle=ca.ca_bundle, preferred_chain=ca.preferred_chain)

    def make(site: SiteConfig) -> IssuerPort:
        ch = site.challenge
        return for_challenge(ch.type, str(ch.webroot) if ch.webroot else None, ch.listen_host,
                             ch.listen_port)

    return make


class ServerDeployer:
    """The engine's deploy port over the real adapters; also finishes interrupted activations."""

    def __init__(self, config: Config, vault: Vault, stores: BundleStores, clock: Clock) -> None:
        from .servers.registry import make_adapter
        self.config, self.vault, self.clock = config, vault, clock
        self.adapters = {name: make_adapter(dict(s.spec)) for name, s in config.servers.items()}
        self.chain_check = StoreTrustCheck(stores)

    def validate(self, chain: list[x509.Certificate], sni: str) -> str | None:
        """The served chain must validate for `sni` in the file trust stores of its site."""
        site = next((s for s in self.config.sites if sni in s.domains), None)
        trust = site.trust if site else ("system",)
        now = self.clock()
        errors = [f"{n}: {e}" for n, e in
                  self.chain_check.validate(chain[0], chain[1:], trust, sni, now)
                  if e is not None]
        from .trust.programs import KNOWN_PROGRAMS
        programs = [p for p in trust if p in KNOWN_PROGRAMS]
        if programs:
            from .trust.evaluate import engine_for
            from .trust.snapshot import load_snapshot
            path = trust_settings(self.config).snapshot
            snap = load_snapshot(path) if path is not None and path.exists() else None
            ev = engine_for(snap).evaluate(chain[0], chain[1:], at=now, programs=programs, name=sni)
            errors += [f"{v.program}: not trusted ({v.reason.value})" for v in ev.verdicts
                       if not v.trusted]
        return "; ".join(errors) or None

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
        from . import deploy
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
        from . import deploy
        return [f"{r.site}: {r.action}: {r.message}" for r in
                deploy.recover(self.vault, self.adapters, validate=self.validate,
                               verify_timeout=self.config.daemon.verify_timeout)]


def build_notify(config: Config) -> Notify | None:
    try:
        from .notify.factory import from_config
    except ImportError:
        return None
    return from_config(config.raw.get("notify", {}), file=str(config.path))


def build(config: Config, *, clock: Clock = utcnow, notify: Notify | None = None) -> Runtime:
    db, vault = open_store(config)
    stores = BundleStores()
    deployer = ServerDeployer(config, vault, stores, clock)
    engine = Engine(
        config, db, vault,
        checks=build_checks(config, stores),
        issuers={name: issuer_factory(config, vault, ca) for name, ca in config.cas.items()},
        deploy=deployer,
        notify=notify if notify is not None else build_notify(config),
        clock=clock,
    )
    return Runtime(config, db, vault, engine, stores, deployer)
