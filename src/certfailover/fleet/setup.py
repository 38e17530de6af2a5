"""Build a fleet agent from the config: this host's servers, sites, vault and the [fleet] table."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from ..health import BundleStores, StoreTrustCheck
from ..model import utcnow
from ..servers.registry import make_adapter
from ..store.vault import Vault
from ..trust.check import ProgramTrustCheck
from ..wiring import ChainValidator, build_checks
from .agent import Agent, AgentSite
from .coord import make_engine
from .settings import FleetSettings

__all__ = ["agent_from_config", "fleet_of"]


def fleet_of(config: Config) -> FleetSettings:
    fleet: FleetSettings | None = getattr(config, "fleet", None)
    if fleet is None:
        raise ConfigError(str(config.path), "[fleet]", "is required for fleet commands "
                          "(role, host, kek; see docs/fleet.md)")
    return fleet


def _family(config: Config, name: str) -> str | None:
    """"ec"/"rsa" when another site serves the same name on the same server with the other key
    family (a dual pair): the handshake must ask for this one."""
    site = config.site(name)
    fam = "rsa" if site.key_type.startswith("rsa") else "ec"
    for other in config.sites:
        if other.name != name and other.server == site.server and other.sni == site.sni \
                and ("rsa" if other.key_type.startswith("rsa") else "ec") != fam:
            return fam
    return None


def agent_from_config(config: Config, host: str | None = None) -> Agent:
    """The agent for this host: every [[site]] with a server and endpoints here."""
    fleet = fleet_of(config)
    name = host or fleet.host
    sites = [AgentSite(s.name, s.server, s.endpoints, s.sni, _family(config, s.name))
             for s in config.sites if s.server is not None and s.endpoints]
    if not sites:
        raise ConfigError(str(config.path), "[[site]]", "an agent needs sites with a server "
                          "and endpoints on this host")
    checks = build_checks(config, BundleStores())
    validate = ChainValidator(config.sites,
                              next(c for c in checks if isinstance(c, StoreTrustCheck)),
                              next(c for c in checks if isinstance(c, ProgramTrustCheck)), utcnow)
    adapters = {n: make_adapter(dict(s.spec)) for n, s in config.servers.items()}
    return Agent(name, make_engine(fleet.database, f"certfailover agent {name}"), fleet.keyring,
                 Vault(config.store), adapters, sites, validate=validate,
                 verify_timeout=config.daemon.verify_timeout, prefetch=fleet.prefetch)
