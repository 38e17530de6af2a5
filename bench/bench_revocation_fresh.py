"""Revocation freshness with the shipped [schedule]: revocation at the CA -> verified switch.

A real daemon (`wiring.build_daemon`, as `certfailover run` starts it; no [schedule] table, so
the shipped `Intervals()` defaults; `[daemon] interval` 300 s, the shipped default) on a lab
site: nginx on loopback, two Pebble CAs, each with a status service (lab.status) that
publishes CRLs whose nextUpdate is 7 days away (`crl_validity`), re-published at once when the
revoked set changes, as public CAs do. The CAs have no OCSP (like Let's Encrypt since 2025):
the CRL is the only way the revocation can arrive (ARI is polled, its window does not move).

1. Build the lab; the site's first certificate comes from CA "fresh-a"; start the daemon.
2. Steady: the daemon has ticked, a standby from "fresh-b" exists, fresh-a's CRL was fetched.
3. Revoke the active certificate at fresh-a (keyCompromise) at a random moment in the next
   `--spread` seconds (default: one tick, 300 s), so the phase against the 5-minute CRL
   revalidation is random.
4. Time until the daemon has switched the site to fresh-b and nginx serves it (handshake).
5. The status services' counters (requests, 200 / 304, bytes incl. headers) give the cost of
   the CRL revalidation per CRL URL, measured from steady to the end.

Run: .venv/bin/python bench/bench_revocation_fresh.py [--seed N] [--spread S] [--json]
(takes 2-12 minutes: steady ~1 min, then up to --spread, then up to one CRL period + a tick).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from certfailover.model import CertState
from certfailover.schedule import Intervals
from certfailover.wiring import build_daemon
from certfailover_lab.pebble import ChallTestSrv, revoke
from certfailover_lab.ports import free_port
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.stack import RevocableCA

SEVEN_DAYS = timedelta(days=7)


def log(msg: str, t0: float = time.monotonic()) -> None:
    print(f"[{time.monotonic() - t0:7.1f}s] {msg}", flush=True)


def wait(pred: Any, timeout: float, step: float = 0.2) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def crl_cost(counts: dict[str, int], seconds: float) -> dict[str, float]:
    hours = seconds / 3600
    req, ok, nm = counts.get("crl.requests", 0), counts.get("crl.200", 0), counts.get("crl.304", 0)
    return {"window_s": round(seconds, 1), "requests": req, "200": ok, "304": nm,
            "bytes": counts.get("crl.bytes", 0), "body_bytes": counts.get("crl.body_bytes", 0),
            "requests_per_hour": round(req / hours, 2) if hours else 0.0,
            "bytes_per_hour": round(counts.get("crl.bytes", 0) / hours) if hours else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--spread", type=float, default=300.0,
                    help="revoke at a random moment within this many seconds after steady")
    ap.add_argument("--interval", type=float, default=300.0, help="[daemon] interval (s)")
    ap.add_argument("--after", type=float, default=120.0,
                    help="keep counting this long after the switch (s)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    iv = Intervals()
    result: dict[str, Any] = {
        "seed": seed, "python": platform.python_version(), "interval_s": args.interval,
        "schedule": {"crl": str(iv.crl), "ocsp": str(iv.ocsp), "minimum": str(iv.minimum),
                     "jitter": iv.jitter}, "crl_next_update": "thisUpdate + 7 days"}
    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="revfresh-")))
        dns = stack.enter_context(ChallTestSrv(work / "challtestsrv"))
        http01 = free_port()
        cas = []
        for name in ("fresh-a", "fresh-b"):
            ca = stack.enter_context(RevocableCA(work / name, name=name, http_port=http01,
                                                 dns_server=dns.dns_address, ocsp=False,
                                                 crl_validity=SEVEN_DAYS))
            ca.status.retry_after = 6 * 3600  # ARI Retry-After as a public CA sends it
            cas.append(ca)
        a, b = cas
        lab: Lab = stack.enter_context(contextlib.contextmanager(make_lab)(
            work, [a.entry(), b.entry()], [a.pebble.root_pem(), b.pebble.root_pem()], http01,
            daemon={"interval": args.interval, "verify_timeout": 5, "issue_timeout": 60}))
        assert lab.rt.config.schedule == Intervals(), "the bench runs the shipped [schedule]"
        lab.rt.engine.tick()  # activates the first certificate (as `certfailover run --once`)
        first = lab.active()
        assert first.ca == "fresh-a"
        from cryptography import x509
        leaf = x509.load_pem_x509_certificate((Path(first.path) / "cert.pem").read_bytes())
        a.status.add_known_serial(leaf.serial_number)  # Pebble cannot list what it issued
        log(f"lab up: active {first.ca} serial {first.serial[:16]}; CRL {a.status.crl_url}")

        daemon = build_daemon(lab.rt.engine, lab.rt.config, interval=args.interval,
                              rng=random.Random(seed))
        thread = threading.Thread(target=daemon.run, name="certfailover-daemon", daemon=True)
        thread.start()

        def stop() -> None:
            daemon.stop_event.set()
            daemon._wake.set()
            thread.join(60)
            daemon.close()

        stack.callback(stop)

        def steady() -> bool:
            certs = lab.rt.db.certs("www")
            return (daemon.ticks >= 1 and any(c.ca == "fresh-b" and c.state is CertState.STANDBY
                                              for c in certs)
                    and a.status.counters().get("crl.200", 0) >= 1)

        if not wait(steady, 180):
            log("daemon never became steady")
            return 1
        t_steady = time.monotonic()
        for ca in cas:
            ca.status.reset_counters()
        delay = rng.uniform(0, args.spread)
        log(f"steady after {daemon.ticks} tick(s); revoking in {delay:.1f} s (seed {seed})")
        time.sleep(delay)
        d = Path(first.path)
        seen = len(lab.rt.db.events(site="www"))
        t_revoke = time.monotonic()
        revoke(a.pebble.directory_url, a.pebble.ca_bundle, (d / "cert.pem").read_bytes(),
               (d / "privkey.pem").read_bytes(), 1)
        log("revoked at fresh-a")

        def switched() -> Any:
            evs = lab.rt.db.events(site="www")[seen:]
            fo = next((e for e in evs if e.kind == "failover"), None)
            if fo is None:
                return None
            act = lab.active()
            return (fo, act) if act.ca == "fresh-b" and lab.served_sha() == act.sha256 else None

        got = wait(switched, 2 * 3600, step=0.5)
        t_switch = time.monotonic()
        if got is None:
            log("no switch")
            return 1
        fo, act = got
        result["time_to_switch_s"] = round(t_switch - t_revoke, 1)
        result["revoke_delay_after_steady_s"] = round(delay, 1)
        result["failover_message"] = fo.message
        log(f"switched to {act.ca} in {t_switch - t_revoke:.1f} s: {fo.message}")
        time.sleep(args.after)
        window = time.monotonic() - t_steady
        result["crl_fresh_a"] = crl_cost(a.status.counters(), window)
        result["crl_fresh_b"] = crl_cost(b.status.counters(), window)
        result["counters_a"] = a.status.counters()
        result["counters_b"] = b.status.counters()
        rev = next(k for k in lab.rt.engine.checks if k.name == "revocation")
        crls = rev.crls  # type: ignore[attr-defined]
        result["cache"] = {"requests": crls.requests, "downloads": crls.downloads,
                           "not_modified": crls.not_modified, "failures": crls.failures}
        result["ticks"] = daemon.ticks
        result["end"] = datetime.now(UTC).isoformat()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
