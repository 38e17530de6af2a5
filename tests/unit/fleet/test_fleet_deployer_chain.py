"""A chain switch on a fleet controller is refused as a switch, never reported verified: the
agents are told certificates, not chains, and prove the leaf only (docs/fleet.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from certfailover.engine import Switch
from certfailover.fleet.deployer import FleetDeployer
from certfailover.testing import pki


class NoLeader:
    """Fails the test if the deployer publishes anything."""

    def try_lead(self) -> bool:
        raise AssertionError("a chain switch must not be published")


def test_a_chain_switch_is_a_failed_switch_not_a_verified_one(tmp_path: Path) -> None:
    leaf, _ = pki.make_leaf(pki.make_root("R"), ["www.example.test"])
    cert = pki.material(leaf, path=str(tmp_path / "cert")).cert
    site: Any = SimpleNamespace(name="www")
    served = Switch(site, dataclasses.replace(cert, path=str(tmp_path / "cert" / "chains" / "1")),
                    cert)
    deployer = FleetDeployer(NoLeader(), None, None, record=lambda events: None)  # type: ignore[arg-type]
    (result,) = deployer(None, [served])
    assert not result.ok and not result.rolled_back
    assert "chain switch is not published to fleet agents" in result.message
    assert cert.id in result.message
