"""The engine's deploy port on a fleet controller (wiring.build asks for it)."""

from __future__ import annotations

import os

from ..config import Config
from ..engine import DeployPort
from ..errors import ConfigError
from ..store.db import Database
from ..store.vault import Vault
from .coord import Leader, Leases, make_engine
from .deployer import FleetDeployer
from .share import ControllerShare

__all__ = ["controller_port"]


def controller_port(config: Config, vault: Vault, db: Database) -> DeployPort | None:
    """A FleetDeployer when `[fleet] role = "controller"`, publishing under this controller's
    share of the sites (fleet.share); None without a [fleet] table (the local servers). On an
    agent host the engine is refused: a `run` there would issue and switch on its own, beside
    the fleet's controllers. The daemon calls the deployer's `track()` each tick (hosts not
    converged are alerted after `converge_timeout`)."""
    fleet = getattr(config, "fleet", None)
    if fleet is None:
        return None
    if fleet.role != "controller":
        raise ConfigError(str(config.path), "[fleet].role",
                          f"this host is a fleet {fleet.role} ({fleet.host}): run `certfailover "
                          "agent` here, and `certfailover fleet status` to see the fleet; the "
                          "engine's commands (run, check, distrust, ...) belong to controllers")
    holder = f"{fleet.host}:{os.getpid()}"
    share = ControllerShare(
        Leases(make_engine(fleet.database, f"certfailover controller {holder}"), holder),
        [s.name for s in config.sites], db=db, vault=vault, ring=fleet.keyring,
        ttl=fleet.lease_ttl, stale_orders=config.daemon.issue_timeout + 60.0,
        leader=Leader(fleet.database, holder=holder))
    return FleetDeployer(share, fleet.keyring, vault, converge_timeout=fleet.converge_timeout,
                         record=db.add_events, stale_after=fleet.stale_after,
                         lag_grace=fleet.lag_grace)
