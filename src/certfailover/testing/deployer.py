"""A deploy port that records what the engine activated, with no web server.

::

    deployer = RecordingDeployer(vault)      # vault: also flip live/<site> like a real switch
    engine = Engine(config, db, vault, checks=..., issuers=..., deploy=deployer)
    engine.tick()
    assert deployer.serving["www"] == some_cert.id
    deployer.serve_wrong_leaf(ca="b")        # the handshake proves b's switch wrong: rolled back
    assert deployer.activations[-1].ok is False

`serving` is what the fake server serves now, per site; it changes only on a verified switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..engine import Switch, SwitchResult
from ..store.vault import Vault

__all__ = ["Activation", "RecordingDeployer"]


@dataclass(frozen=True)
class Activation:
    """One switch the engine asked for, and what the fake server answered."""

    server: str | None
    site: str
    target: str  # cert id
    previous: str | None
    ok: bool
    message: str


class RecordingDeployer:
    def __init__(self, vault: Vault | None = None) -> None:
        self.vault = vault
        self.activations: list[Activation] = []
        self.serving: dict[str, str] = {}
        self._wrong: set[tuple[str | None, str | None]] = set()  # (site, ca); None: any

    def serve_wrong_leaf(self, *, site: str | None = None, ca: str | None = None) -> None:
        """From now on, a switch of `site` (any when None) to a certificate from `ca` (any
        when None) is answered with the previous leaf, so the engine sees a rollback."""
        self._wrong.add((site, ca))

    def heal(self) -> None:
        self._wrong.clear()

    def _rejects(self, sw: Switch) -> bool:
        return any(s in (None, sw.site.name) and c in (None, sw.target.ca) for s, c in self._wrong)

    def __call__(self, server: str | None, switches: Sequence[Switch]) -> list[SwitchResult]:
        out = []
        for sw in switches:
            site = sw.site.name
            if self._rejects(sw):
                served = self.serving.get(site, "nothing")
                msg = (f"handshake served {served}, expected {sw.target.id} "
                       f"(sha256 {sw.target.sha256[:16]}); rolled back")
                out.append(SwitchResult(site, False, True, msg, 0.0))
            else:
                if self.vault is not None:
                    self.vault.point_live(site, Path(sw.target.path))
                self.serving[site] = sw.target.id
                msg = f"serving {sw.target.id}"
                out.append(SwitchResult(site, True, False, msg, 0.0))
            self.activations.append(Activation(server, site, sw.target.id,
                                               sw.previous.id if sw.previous else None,
                                               out[-1].ok, msg))
        return out
