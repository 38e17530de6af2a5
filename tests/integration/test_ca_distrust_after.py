"""A CA past its distrust-after date is dead for new certificates (the Symantec / Entrust /
TrustCor pattern), on the lab: two Pebble CAs, a Mozilla snapshot generated from a certdata.txt
that holds both lab roots, CA A's with a distrust-after in the past but after the active
certificate's notBefore. The active stays trusted; the site and the CA get a warning, no order
goes to A over the daemon's 1-second ticks up to, at and 5 s past the renewal point, and at the
renewal point the site switches to B's standby instead of renewing from A."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certfailover import config as config_mod
from certfailover.cli.main import main
from certfailover.status import site_status
from certfailover.wiring import build, build_daemon
from certfailover_lab.pebble import ChallTestSrv, PebbleCA
from certfailover_lab.sitelab import make_lab
from certfailover_lab.sites import LabCAEntry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "trust"))
import trustpki

pytestmark = pytest.mark.integration
lab_of = contextmanager(make_lab)
#: seconds: CA A's certificates; the renewal point is at 24 s, and the renewal window (12 s)
#: holds two 1-second ticks and the 10-second issue_timeout (policy.unprotected)
LIFETIME = 36


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory, challtestsrv: ChallTestSrv,
        http01_port: int) -> Iterator[tuple[PebbleCA, PebbleCA]]:
    work = tmp_path_factory.mktemp("distrust-after")
    a = PebbleCA(work / "a", name="dying-a", http_port=http01_port,
                 dns_server=challtestsrv.dns_address, validity_seconds=LIFETIME,
                 nonce_reject_percent=0)
    b = PebbleCA(work / "b", name="healthy-b", http_port=http01_port,
                 dns_server=challtestsrv.dns_address, nonce_reject_percent=0)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _utctime(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%y%m%d%H%M%SZ")


def test_a_ca_past_its_distrust_after_gets_no_orders_and_its_standby_succeeds(
        tmp_path: Path, cas: tuple[PebbleCA, PebbleCA], http01_port: int) -> None:
    a, b = cas
    entries = [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in (a, b)]
    snapshot = tmp_path / "trust-snapshot.json.gz"
    with lab_of(tmp_path, entries, [a.root_pem(), b.root_pem()], http01_port,
                daemon={"verify_timeout": 5, "issue_timeout": 10, "interval": 1},
                site_extra={"trust": [str(tmp_path / "clients.pem"), "mozilla"]},
                extra_toml=f'[trust]\nsnapshot = "{snapshot}"\n') as lab:
        first = lab.rt.db.certs("www")[0]  # the bootstrap certificate, from A
        cutoff = first.not_before + timedelta(seconds=1)
        roots = [trustpki.CA(x509.load_pem_x509_certificate(c.root_pem()), None)  # type: ignore[arg-type]
                 for c in (a, b)]
        certdata = tmp_path / "certdata.txt"
        certdata.write_bytes(trustpki.certdata([
            (roots[0], "CKT_NSS_TRUSTED_DELEGATOR", _utctime(cutoff), None),
            (roots[1], "CKT_NSS_TRUSTED_DELEGATOR", None, None)]))
        assert main(["--config", str(lab.config_path), "trust", "update", "--source",
                     f"mozilla={certdata}", "--output", str(snapshot)]) == 0
        while datetime.now(UTC) < cutoff + timedelta(seconds=1):
            time.sleep(0.1)  # the cut-off is in the past, after the active's notBefore

        lab.rt.engine.tick()  # activates A (still trusted), orders B's standby
        assert lab.active().ca == "dying-a" and lab.served_sha() == lab.active().sha256
        assert sorted(c.ca for c in lab.rt.db.certs("www")) == ["dying-a", "healthy-b"]
        notes = site_status(lab.rt.db, lab.rt.config.site("www"), datetime.now(UTC))["notes"]
        assert any("CA dying-a can no longer issue certificates trusted by mozilla" in n
                   for n in notes), notes
        said = [e for e in lab.rt.db.events(site="www") if e.kind == "ca_cannot_issue"]
        assert len(said) == 1 and said[0].data == {"ca": "dying-a", "program": "mozilla"}
        orders_to_a = len(lab.rt.db.orders(ca="dying-a"))

        rt = build(config_mod.load(lab.config_path))
        daemon = build_daemon(rt.engine, rt.config, interval=1)
        t = threading.Thread(target=daemon.run, daemon=True)
        t.start()
        started = time.monotonic()
        switched_at: datetime | None = None
        try:
            # 1-second ticks until 5 s after the switch (at most a minute): no order may go
            # to the dead CA before, at or after it
            while time.monotonic() - started < 60:
                if switched_at is None and lab.active().ca == "healthy-b":
                    switched_at = datetime.now(UTC)
                if switched_at is not None and \
                        (datetime.now(UTC) - switched_at).total_seconds() > 5:
                    break
                time.sleep(0.2)
        finally:
            daemon.stop_event.set()
            daemon._wake.set()
            t.join(10)
            daemon.close(5)
        assert len(lab.rt.db.orders(ca="dying-a")) == orders_to_a, "an order went to the dead CA"
        assert switched_at is not None, "no switch to B's standby"
        renew_at = first.not_after - timedelta(seconds=LIFETIME / 3)
        assert renew_at - timedelta(seconds=2) <= switched_at < first.not_after, \
            (renew_at, switched_at, first.not_after)
        fo = next(e for e in lab.rt.db.events(site="www") if e.kind == "failover")
        assert "renewal window" in fo.message
        assert lab.served_sha() == lab.active().sha256
        missing = [e for e in lab.rt.db.events(site="www") if e.kind == "standby_missing"]
        assert missing and "dying-a" in missing[-1].message, "why no new standby is said"
        print(f"\nswitched {(first.not_after - switched_at).total_seconds():.1f}s before "
              f"notAfter; 0 orders to the dead CA in {time.monotonic() - started:.0f} s")
