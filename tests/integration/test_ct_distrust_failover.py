"""`[ct] distrust_on_unexpected` on real parts: the site's active CA (a real Pebble) issues a
certificate for the site's name outside certfailover (a hijacked DNS, a careless CA); it is
logged to the lab CT log; the daemon's CT watch distrusts that CA for the site and wakes the
daemon, which fails the site over to the other CA on a real nginx, proven by handshake. The
daemon's interval is long (60 s): only the watch's wake-up can make it that fast."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from certfailover import keys
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import StandaloneSolver
from certfailover.model import CertState, utcnow
from certfailover.wiring import build_daemon
from certfailover_lab.ctlog import CTLog, log_pem
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sitelab import DOMAIN, Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration


def test_an_unexpected_certificate_from_the_active_ca_fails_the_site_over(
        tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> None:
    with CTLog() as log, contextlib.ExitStack() as stack:
        logs = tmp_path / "logs.json"
        logs.write_text(json.dumps(log.log_list()))
        extra = (f'[ct]\nlog_list = "{logs}"\nstart = "beginning"\ninterval = 1\ntimeout = 5\n'
                 'distrust_on_unexpected = ["www"]\n')
        lab: Lab = stack.enter_context(contextlib.contextmanager(make_lab)(
            tmp_path, [LabCAEntry(c.name, c.directory_url, c.ca_bundle)
                       for c in (pebble_a, pebble_b)],
            [pebble_a.root_pem(), pebble_b.root_pem()], http01_port, extra_toml=extra))
        lab.rt.engine.tick()
        first = lab.active()
        assert first.ca == pebble_a.name and lab.wait_served(first.sha256)
        for c in lab.rt.db.certs("www", include_retired=True):  # ours are logged too
            log_pem(log.url, (Path(c.path) / "fullchain.pem").read_bytes())

        daemon = build_daemon(lab.rt.engine, lab.rt.config, interval=60)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()

        def stop() -> None:
            daemon.stop_event.set()
            daemon.wake()
            thread.join(30)
            daemon.close()
        stack.callback(stop)
        assert daemon.ct_watch is not None
        deadline = time.monotonic() + 10
        while daemon.ct_watch.polls == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.ct_watch.polls > 0
        assert not any(e.kind == "unexpected_certificate" for e in lab.rt.db.events(site="www"))

        rogue = AcmeIssuer(pebble_a.name, pebble_a.directory_url, email="mallory@example.test",
                           account_key_path=tmp_path / "rogue-account.pem",
                           solver=StandaloneSolver("127.0.0.1", http01_port),
                           ca_bundle=pebble_a.ca_bundle)
        issued = rogue.issue(keys.csr_pem(keys.generate("ec-p256"), [DOMAIN]),
                             deadline=utcnow() + timedelta(seconds=30))
        t0 = time.monotonic()
        log_pem(log.url, issued.fullchain_pem)

        while time.monotonic() - t0 < 20:
            active = lab.active()
            if active.ca == pebble_b.name:
                break
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert active.ca == pebble_b.name, [e.kind for e in lab.rt.db.events(site="www")]
        assert lab.wait_served(active.sha256), "the switch is proven by a handshake"
        assert took < 10, f"{took:.1f} s: the watch must wake the daemon (interval 60 s)"
        print(f"[ct distrust] logged -> verified switch: {took:.2f} s")

    kinds = [e.kind for e in lab.rt.db.events(site="www")]
    assert kinds.index("unexpected_certificate") < kinds.index("distrust") < kinds.index("failover")
    assert lab.rt.db.distrusted() == {}, "a distrust of this site only"
    assert pebble_a.name in lab.rt.db.distrusted("www")
    assert lab.rt.db.cert(first.id).state is not CertState.ACTIVE  # type: ignore[union-attr]
