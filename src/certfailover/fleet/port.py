"""The engine's deploy port on a fleet controller (wiring.build asks for it)."""

from __future__ import annotations

import os

from ..config import Config
from ..engine import DeployPort
from ..store.db import Database
from ..store.vault import Vault
from .coord import Leader
from .deployer import FleetDeployer

__all__ = ["controller_port"]


def controller_port(config: Config, vault: Vault, db: Database) -> DeployPort | None:
    """A FleetDeployer when `[fleet] role = "controller"`; None otherwise (the local servers)."""
    fleet = getattr(config, "fleet", None)
    if fleet is None or fleet.role != "controller":
        return None
    leader = Leader(fleet.database, holder=f"{fleet.host}:{os.getpid()}")
    return FleetDeployer(leader, fleet.keyring, vault, converge_timeout=fleet.converge_timeout,
                         record=db.add_events)
