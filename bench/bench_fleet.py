"""Fleet scale: what a daemon tick costs when nothing is due, against a full tick.

N sites (default 1000), each with an active and a standby certificate from two CAs (a test
PKI, stored through the engine), trust in a PEM bundle, no web server (activation flips the
live link only), CA directories on a closed loopback port: nothing leaves the machine.

Measured in one run:
  full        Engine.tick(): every check of every certificate (the baseline)
  first       the daemon's first scheduled tick: everything is due
  idle        scheduled ticks with nothing due (the clock moves 5 s per tick): median of 20
  incident    the operator distrusts CA "a": only a's certificates are re-checked, those sites
              fail over
Run: .venv/bin/python bench/bench_fleet.py [--sites N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import config as config_mod
from certfailover import keys
from certfailover.daemon import Daemon
from certfailover.lab import pki
from certfailover.model import CertState
from certfailover.schedule import Scheduler
from certfailover.wiring import build


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run(n: int, workdir: Path) -> dict[str, Any]:
    cas = {ca: pki.make_intermediate(pki.make_root(f"Fleet Root {ca}"), f"Fleet CA {ca}")
           for ca in ("a", "b")}
    bundle = pki.write_bundle(workdir / "roots.pem", *(i.issuer for i in cas.values()
                                                        if i.issuer is not None))
    raw: dict[str, Any] = {
        "store": {"directory": str(workdir / "store")},
        "daemon": {"issue_timeout": 1},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}/dir"} for ca in cas],
        # half the sites prefer a, half prefer b: distrusting a moves half the fleet
        "site": [{"name": f"site{i:05d}", "domains": [f"www{i}.fleet.test"],
                  "cas": ["a", "b"] if i % 2 == 0 else ["b", "a"], "trust": [str(bundle)]}
                 for i in range(n)],
    }
    clock = Clock()
    rt = build(config_mod.parse(raw, file="bench.toml", base=workdir, env={}), clock=clock)
    t_fill = time.perf_counter()
    for site in rt.config.sites:
        for ca, inter in cas.items():
            leaf, key = pki.make_leaf(inter, list(site.domains),
                                      not_before=clock.now - timedelta(days=1))
            rt.engine.store_cert(site, ca, leaf_pem=leaf.public_bytes(Encoding.PEM),
                                 chain_pem=inter.pem, key_pem=keys.key_pem(key), source="bench")
    fill = time.perf_counter() - t_fill
    activate, rep = timed(rt.engine.tick)  # first tick: activates every site
    assert sum(e.kind == "activated" for e in rep.events) == n, "every site activated"

    full, rep = timed(rt.engine.tick)  # the baseline: every check, nothing to change
    assert not rep.events, [e.kind for e in rep.events][:5]

    daemon = Daemon(rt.engine, interval=1, clock=clock, scheduler=Scheduler(rng=random.Random(1)))
    first, _ = timed(daemon.tick)
    idle_times = []
    for _ in range(20):
        clock.now += timedelta(seconds=5)
        t, rep = timed(daemon.tick)
        assert not rep.events and not rep.health, "nothing due: nothing checked"
        idle_times.append(t)
    idle = statistics.median(idle_times)

    rt.db.distrust("a", clock.now, "bench: CA a in the news")
    clock.now += timedelta(seconds=5)
    incident, rep = timed(daemon.tick)
    failovers = sum(e.kind == "failover" for e in rep.events)
    active_b = sum(1 for c in rt.db.certs() if c.state is CertState.ACTIVE and c.ca == "b")
    assert failovers == n // 2 + n % 2 and active_b == n
    daemon.close()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "sites": n, "certificates": 2 * n,
        "fill_s": round(fill, 2), "activate_tick_s": round(activate, 3),
        "full_tick_s": round(full, 3), "first_scheduled_tick_s": round(first, 3),
        "idle_tick_s": round(idle, 5), "idle_tick_max_s": round(max(idle_times), 5),
        "incident_tick_s": round(incident, 3), "incident_failovers": failovers,
        "full_tick_per_site_ms": round(1000 * full / n, 3),
        "idle_tick_per_site_us": round(1e6 * idle / n, 3),
        "ratio_idle_to_full": round(idle / full, 5),
        "peak_rss_mib": round(rss_mib, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="certfailover-fleet-") as d:
        r = run(args.sites, Path(d))
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return 0
    print(f"| measurement ({r['sites']} sites, {r['certificates']} certificates) | seconds |")
    print("|---|---:|")
    for key, label in (("full_tick_s", "full tick, every check (baseline)"),
                       ("first_scheduled_tick_s", "first scheduled tick (everything due)"),
                       ("idle_tick_s", "scheduled tick, nothing due (median of 20)"),
                       ("incident_tick_s", f"distrust CA a: its {r['sites']} certificates "
                                           f"re-checked, {r['incident_failovers']} failovers")):
        print(f"| {label} | {r[key]} |")
    print(f"\nratio idle / full tick: {r['ratio_idle_to_full']}  "
          f"(full {r['full_tick_per_site_ms']} ms per site, idle {r['idle_tick_per_site_us']} µs "
          f"per site); peak RSS {r['peak_rss_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
