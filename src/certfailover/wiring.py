"""Composition root: config -> database, vault, checks, issuers, deploy port, notifications.

The only module that knows every concrete adapter. Everything else takes ports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .checks import Check
from .config import CAConfig, Config, SiteConfig
from .engine import Engine, IssuerPort, Notify, Switch, SwitchResult
from .health import BundleStores, StoreTrustCheck, local_checks
from .model import Clock, utcnow
from .store.db import Database
from .store.vault import Vault

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    config: Config
    db: Database
    vault: Vault
    engine: Engine
    stores: BundleStores


def open_store(config: Config) -> tuple[Database, Vault]:
    vault = Vault(config.store)
    vault.ensure()
    db = Database(config.database)
    db.migrate()
    return db, vault


def build_checks(config: Config, stores: BundleStores) -> list[Check]:
    checks: list[Check] = list(local_checks(stores))
    checks.extend(extra_checks(config))
    return checks


def extra_checks(config: Config) -> list[Check]:
    """Revocation (CRL, OCSP, ARI) and root-program trust checks."""
    out: list[Check] = []
    from .revocation.check import RevocationCheck
    out.append(RevocationCheck.from_config(config))
    from .trust.check import ProgramTrustCheck
    out.append(ProgramTrustCheck())
    return out


def issuer_factory(config: Config, vault: Vault, ca: CAConfig) -> Callable[[SiteConfig], IssuerPort]:
    from .issuers.acme import AcmeIssuer
    from .issuers.challenges import StandaloneSolver, WebrootSolver

    @lru_cache(maxsize=None)
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


def deploy_port(config: Config, vault: Vault, stores: BundleStores) -> Callable[
        [str | None, Sequence[Switch]], list[SwitchResult]]:
    from . import deploy as deploy_mod
    from .servers.base import Endpoint, make_adapter

    adapters = {name: make_adapter(dict(s.spec)) for name, s in config.servers.items()}
    chain_check = StoreTrustCheck(stores)

    def port(server: str | None, switches: Sequence[Switch]) -> list[SwitchResult]:
        if server is None:  # no server: the live link is the deployment (e.g. a file watcher)
            out = []
            for sw in switches:
                vault.point_live(sw.site.name, Path(sw.target.path))
                out.append(SwitchResult(sw.site.name, True, False, "live link updated (no server)", 0.0))
            return out
        by_site = {sw.site.name: sw.site for sw in switches}

        def validate(chain: list, sni: str, _sites: dict = by_site) -> str | None:
            site = next((s for s in _sites.values() if sni in s.domains), None)
            trust = site.trust if site else ("system",)
            from .model import utcnow as now
            errors = [f"{n}: {e}" for n, e in chain_check.validate(chain[0], chain[1:], trust, sni, now())
                      if e is not None]
            return "; ".join(errors) or None

        batch = [deploy_mod.Activation(
            site=sw.site.name, target=Path(sw.target.path), expected_sha256=sw.target.sha256,
            endpoints=tuple(Endpoint(e.host, e.port) for e in sw.site.endpoints), sni=sw.site.sni)
            for sw in switches]
        results = deploy_mod.activate(vault, adapters[server], batch, validate=validate,
                                      verify_timeout=config.daemon.verify_timeout)
        return [SwitchResult(r.site, r.ok, r.rolled_back, r.message, r.seconds) for r in results]

    return port


def build_notify(config: Config) -> Notify | None:
    try:
        from .notify.factory import from_config
    except ImportError:
        return None
    return from_config(config.raw.get("notify", {}), file=str(config.path))


def build(config: Config, *, clock: Clock = utcnow, notify: Notify | None = None) -> Runtime:
    db, vault = open_store(config)
    stores = BundleStores()
    engine = Engine(
        config, db, vault,
        checks=build_checks(config, stores),
        issuers={name: issuer_factory(config, vault, ca) for name, ca in config.cas.items()},
        deploy=deploy_port(config, vault, stores),
        notify=notify if notify is not None else build_notify(config),
        clock=clock,
    )
    return Runtime(config, db, vault, engine, stores)
