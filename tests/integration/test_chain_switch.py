"""A chain switch on real parts: Pebble with an alternate root (`PEBBLE_ALTERNATE_ROOTS`), a
real nginx, real handshakes under a client loop.

The root of the served path leaves the site's trust bundle: the engine serves the same leaf
with the alternate chain (no order, verified by handshake), and clients that trust both roots
see no failed handshake. Both paths gone: only then does the certificate fail over.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from certfailover.probe import ProbeError, leaf_sha256, served_chain
from certfailover.store.vault import chain_dirs, chain_index
from certfailover_lab import BLOCKED_DOMAIN
from certfailover_lab.pebble import ChallTestSrv, PebbleCA
from certfailover_lab.sitelab import DOMAIN, Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pebble_alt(lab_dir: Path, http01_port: int,
               challtestsrv: ChallTestSrv) -> Iterator[PebbleCA]:
    name = f"pebble-alt-{uuid.uuid4().hex[:6]}"
    with PebbleCA(lab_dir / name, name="pebble-alt", http_port=http01_port,
                  dns_server=challtestsrv.dns_address, domain_blocklist=(BLOCKED_DOMAIN,),
                  alternate_roots=1) as ca:
        yield ca


class Clients(threading.Thread):
    """A client population that trusts both of the CA's roots: handshakes in a loop, each
    served chain verified; counts failures, the leaves and the chain tops it saw."""

    def __init__(self, lab: Lab, roots: list[x509.Certificate]) -> None:
        super().__init__(daemon=True)
        self.lab, self.store = lab, Store(roots)
        self.stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.leaves: set[str] = set()
        self.tops: list[str] = []

    def run(self) -> None:
        verifier = PolicyBuilder().store(self.store).build_server_verifier(x509.DNSName(DOMAIN))
        while not self.stop.is_set():
            try:
                chain = served_chain(self.lab.nginx.endpoint, DOMAIN, timeout=5)
                verifier.verify(chain[0], chain[1:])
            except (ProbeError, OSError, VerificationError) as exc:
                self.failed.append(str(exc))
                continue
            self.ok += 1
            self.leaves.add(leaf_sha256(chain[0]))
            top = chain[-1].issuer.rfc4514_string()
            if not self.tops or self.tops[-1] != top:
                self.tops.append(top)


def trust_only(lab: Lab, *roots: bytes) -> None:
    """The site's trust bundle (what its clients trust) now holds `roots` only."""
    lab.bundle.write_bytes(b"".join(roots))
    st = lab.bundle.stat()
    os.utime(lab.bundle, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_chain_switch_on_nginx_same_leaf_no_issuance_zero_failed_handshakes(
    tmp_path: Path, pebble_alt: PebbleCA, pebble_b: PebbleCA, http01_port: int
) -> None:
    root0 = pebble_alt.root_pem()
    root1 = pebble_alt._management_get("/roots/1").content
    root_b = pebble_b.root_pem()
    cas = [LabCAEntry(pebble_alt.name, pebble_alt.directory_url, pebble_alt.ca_bundle),
           LabCAEntry(pebble_b.name, pebble_b.directory_url, pebble_b.ca_bundle)]
    for lab in make_lab(tmp_path, cas, [root0, root1, root_b], http01_port):
        lab.rt.engine.tick()
        active = lab.active()
        assert active.ca == "pebble-alt"
        assert len(chain_dirs(Path(active.path))) == 2, "the alternate chain is kept"
        assert chain_index(Path(active.path), lab.rt.vault.live_target("www")) == 0
        orders = len(lab.rt.db.orders())
        roots = [x509.load_pem_x509_certificate(r) for r in (root0, root1)]
        clients = Clients(lab, roots)
        clients.start()
        try:
            trust_only(lab, root1, root_b)  # the served path's root leaves the bundle
            report = lab.rt.engine.tick()
            while clients.ok < 20:  # handshakes after the switch too
                threading.Event().wait(0.05)
        finally:
            clients.stop.set()
            clients.join()
        kinds = [e.kind for e in report.events]
        assert "chain_switch" in kinds and "failover" not in kinds, [e.message for e in report.events]
        assert "issued" not in kinds and len(lab.rt.db.orders()) == orders, \
            "no issuance during a chain switch"
        assert lab.active().id == active.id
        assert chain_index(Path(active.path), lab.rt.vault.live_target("www")) == 1
        served = served_chain(lab.nginx.endpoint, DOMAIN)
        assert leaf_sha256(served[0]) == active.sha256, "the same leaf"
        assert served[-1].issuer == roots[1].subject, "with the alternate chain"
        assert clients.failed == [], clients.failed[:3]
        switch = next(e for e in report.events if e.kind == "chain_switch")
        assert "verified by handshake" in switch.message
        assert clients.leaves == {active.sha256}
        # first the original chain, last the alternate one (for a moment after the reload
        # nginx's old and new workers both answer: the tops may alternate in between)
        want = [r.subject.rfc4514_string() for r in roots]
        assert clients.tops[0] == want[0] and clients.tops[-1] == want[1], clients.tops
        assert set(clients.tops) == set(want)
        print(f"\nchain switch under a client loop: {clients.ok} handshakes verified, "
              f"{len(clients.failed)} failed; switch {switch.data['seconds']:.2f}s")

        trust_only(lab, root_b)  # both paths gone: the certificate fails over
        report = lab.rt.engine.tick()
        assert "failover" in [e.kind for e in report.events]
        assert lab.active().ca == pebble_b.name
        assert lab.wait_served(lab.active().sha256)
        assert datetime.now(UTC) < lab.active().not_after


def test_crash_in_a_chain_switch_is_undone_by_the_served_chain(
    tmp_path: Path, pebble_alt: PebbleCA, pebble_b: PebbleCA, http01_port: int
) -> None:
    """The process dies after the live link moved to chain 1 but before nginx reloaded: the
    leaf served is the expected one, so only the served chain shows the switch never
    happened; recover() must undo it (not call it finished)."""
    from certfailover.deploy import Activation, activate, pending_journals, recover

    root0 = pebble_alt.root_pem()
    root1 = pebble_alt._management_get("/roots/1").content
    cas = [LabCAEntry(pebble_alt.name, pebble_alt.directory_url, pebble_alt.ca_bundle),
           LabCAEntry(pebble_b.name, pebble_b.directory_url, pebble_b.ca_bundle)]
    for lab in make_lab(tmp_path, cas, [root0, root1, pebble_b.root_pem()], http01_port):
        lab.rt.engine.tick()
        active, vault = lab.active(), lab.rt.vault
        base = Path(active.path)
        deployer = lab.rt.deployer
        act = Activation("www", base / "chains" / "1", active.sha256, (lab.nginx.endpoint,),
                         DOMAIN)

        class Crash(Exception):
            pass

        def die_at_apply(phase: str) -> None:
            if phase == "apply":
                raise Crash(phase)

        with pytest.raises(Crash):
            activate(vault, deployer.adapters["web"], [act], validate=deployer.validate,
                     on_phase=die_at_apply)
        assert chain_index(base, vault.live_target("www")) == 1 and pending_journals(vault)
        [res] = recover(vault, deployer.adapters, validate=deployer.validate)
        assert res.action == "undone", res.message
        assert chain_index(base, vault.live_target("www")) == 0 and not pending_journals(vault)
        served = served_chain(lab.nginx.endpoint, DOMAIN)
        assert served[-1].issuer == x509.load_pem_x509_certificate(root0).subject
        # and a real chain switch still verifies after the recovery
        [ok] = activate(vault, deployer.adapters["web"], [act], validate=deployer.validate)
        assert ok.ok, ok.message
        assert chain_index(base, vault.live_target("www")) == 1
