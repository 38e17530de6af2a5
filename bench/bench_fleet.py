"""Fleet scale: what a daemon tick costs when nothing is due, against a full tick (issue 6).

N sites (default 1000), each with two stored certificates from two CAs. Test PKI
(certfailover.testing.pki): one root + intermediate per CA shared by all sites, a fresh leaf and
key per site and CA. Trust is a PEM bundle of the two roots; no [[server]] (an activation only
flips the live link); SQLite store in a temporary directory. The CAs' ACME directories point at
a closed loopback port, so the ARI directory look-up is a refused connection and nothing
leaves the machine; the leaves carry no OCSP/CRL URL, so revocation finds no source. No
issuance is needed: every site has its active certificate and one standby.

Measured in one run, in this order:
  full        Engine.tick(): every check of every certificate (the baseline; median of 3)
  no-ari      the same full tick with the ARI directory look-up stubbed out in this process
              (attribution only: how much of the baseline is refused connections)
  first       the daemon's first scheduled tick: everything is due
  idle        scheduled ticks with nothing due, the fake clock 5 s further each time
              (median of --idle-ticks)
  incident    the operator distrusts CA "a" (half the sites prefer it): only a's certificates
              are re-checked (local checks), those sites fail over to b
  after       scheduled ticks after the incident (every site now lacks an independent
              standby: a is distrusted, b is active)

Every phase counts outgoing connection attempts (socket.connect), HTTP fetches by the
revocation check, and certificate-material loads from the vault.

Run: .venv/bin/python bench/bench_fleet.py [--sites N] [--idle-ticks K] [--json]
Quick: --sites 100 (a few seconds).
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import platform
import random
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import config as config_mod
from certfailover import keys
from certfailover.daemon import Daemon
from certfailover.engine import TickReport
from certfailover.model import CertState
from certfailover.schedule import Scheduler
from certfailover.testing import FakeClock, pki
from certfailover.wiring import Runtime, build


class Probe:
    """Counts, per phase: socket connects (and refusals), fetches by URL, vault loads by CA."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connects = 0
        self.refused = 0
        self.peers: collections.Counter[str] = collections.Counter()
        self.fetches: collections.Counter[str] = collections.Counter()
        self.fetch_seconds: list[float] = []
        self.loads: collections.Counter[str] = collections.Counter()

    def snapshot(self) -> dict[str, Any]:
        return {"connects": self.connects, "refused": self.refused,
                "peers": dict(self.peers), "fetches": sum(self.fetches.values()),
                "fetch_urls": dict(self.fetches),
                "fetch_median_ms": round(1000 * statistics.median(self.fetch_seconds), 2)
                if self.fetch_seconds else None,
                "vault_loads": sum(self.loads.values()), "vault_loads_by_ca": dict(self.loads)}


def instrument(rt: Runtime, probe: Probe) -> Any:
    """Wrap socket.connect, the revocation check's fetcher and Engine.material (this process
    only; nothing under src/ changes). Returns the revocation check."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        probe.connects += 1
        probe.peers[str(address[:2]) if isinstance(address, tuple) else str(address)] += 1
        try:
            real_connect(self, address)
        except ConnectionRefusedError:
            probe.refused += 1
            raise

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]

    rev: Any = next(k for k in rt.engine.checks if k.name == "revocation")
    real_fetch: Callable[..., Any] = rev.fetcher.fetch

    def fetch(url: str, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return real_fetch(url, **kw)
        finally:
            probe.fetch_seconds.append(time.perf_counter() - t)
            probe.fetches[url] += 1

    rev.fetcher.fetch = fetch
    real_material: Callable[..., Any] = rt.engine.material

    def material(cert: Any) -> Any:
        probe.loads[cert.ca] += 1
        return real_material(cert)

    rt.engine.material = material  # type: ignore[method-assign]
    return rev


def closed_port() -> int:
    """A loopback port nobody listens on (bound once by us, then released; checked)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) != errno.ECONNREFUSED:
            raise SystemExit(f"port {port} is not closed")
    return port


def timed(fn: Callable[[], TickReport], probe: Probe) -> tuple[float, TickReport, dict[str, Any]]:
    probe.reset()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out, probe.snapshot()


def kinds(report: TickReport) -> dict[str, int]:
    return dict(collections.Counter(e.kind for e in report.events))


def run(n: int, idle_ticks: int, workdir: Path) -> dict[str, Any]:
    t_setup = time.perf_counter()
    port = closed_port()
    cas = {ca: pki.make_intermediate(pki.make_root(f"Fleet Root {ca}"), f"Fleet CA {ca}")
           for ca in ("a", "b")}
    bundle = pki.write_bundle(workdir / "roots.pem",
                              *(i.issuer for i in cas.values() if i.issuer is not None))
    raw: dict[str, Any] = {
        "store": {"directory": str(workdir / "store")},
        "daemon": {"issue_timeout": 1},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:{port}/{ca}/dir"} for ca in cas],
        # half the sites prefer a, half prefer b: distrusting a moves half the fleet
        "site": [{"name": f"site{i:05d}", "domains": [f"www{i}.fleet.test"],
                  "cas": ["a", "b"] if i % 2 == 0 else ["b", "a"], "trust": [str(bundle)]}
                 for i in range(n)],
    }
    clock = FakeClock()
    rt = build(config_mod.parse(raw, file=str(workdir / "bench.toml"), base=workdir, env={}),
               clock=clock)
    for site in rt.config.sites:
        for ca, inter in cas.items():
            leaf, key = pki.make_leaf(inter, list(site.domains),
                                      not_before=clock.now - timedelta(days=1))
            rt.engine.store_cert(site, ca, leaf_pem=leaf.public_bytes(Encoding.PEM),
                                 chain_pem=inter.pem, key_pem=keys.key_pem(key), source="bench")
    setup = time.perf_counter() - t_setup
    probe = Probe()
    rev = instrument(rt, probe)
    out: dict[str, Any] = {"sites": n, "certificates": 2 * n, "closed_port": port,
                           "setup_s": round(setup, 2)}

    # activation: the first tick ever activates every site (not a measurement of interest)
    t, rep, _ = timed(rt.engine.tick, probe)
    assert kinds(rep) == {"activated": n}, kinds(rep)
    out["activation_tick_s"] = round(t, 3)

    # (1) baseline: full ticks, every check of every certificate, nothing to change
    fulls = []
    for _ in range(3):
        t, rep, snap = timed(rt.engine.tick, probe)
        assert not rep.events and len(rep.health) == 2 * n, kinds(rep)
        fulls.append(t)
    full = statistics.median(fulls)
    out["full_tick_s"] = round(full, 3)
    out["full_ticks_s"] = [round(x, 3) for x in fulls]
    out["full_tick_io"] = snap
    ari_outcome = {f.known: f.reason for h in rep.health.values()
                   for f in h.findings if f.check == "ari"}
    reason = next(iter(ari_outcome.values()), None)
    out["ari_finding"] = reason if reason is None or len(reason) < 140 else reason[:137] + "..."

    # attribution: the same full tick with the ARI directory look-up stubbed out
    real_base = rev._ari_base
    rev._ari_base = lambda material, now: None
    try:
        t, rep, snap = timed(rt.engine.tick, probe)
    finally:
        rev._ari_base = real_base
    assert not rep.events
    out["full_tick_no_ari_s"] = round(t, 3)
    out["full_tick_no_ari_io"] = snap

    # (2) the daemon's first scheduled tick: everything due
    daemon = Daemon(rt.engine, interval=1, clock=clock, scheduler=Scheduler(rng=random.Random(1)))
    t, rep, snap = timed(daemon.tick, probe)
    assert not rep.events and len(rep.health) == 2 * n, kinds(rep)
    out["first_scheduled_tick_s"] = round(t, 3)
    out["first_scheduled_tick_io"] = snap

    # (3) steady state: nothing due
    idle_times = []
    for _ in range(idle_ticks):
        clock.now += timedelta(seconds=5)
        t, rep, snap = timed(daemon.tick, probe)
        assert not rep.events and not rep.health, "nothing due: nothing checked"
        assert snap["connects"] == 0 and snap["vault_loads"] == 0 and snap["fetches"] == 0, snap
        idle_times.append(t)
    idle = statistics.median(idle_times)
    out["idle_tick_s"] = round(idle, 5)
    out["idle_tick_min_max_s"] = [round(min(idle_times), 5), round(max(idle_times), 5)]
    out["idle_tick_io"] = snap

    # (4) incident: the operator distrusts CA a
    rt.db.distrust("a", clock.now, "bench: CA a in the news")
    clock.now += timedelta(seconds=5)
    t, rep, snap = timed(daemon.tick, probe)
    failovers = sum(e.kind == "failover" for e in rep.events)
    active = collections.Counter(c.ca for c in rt.db.certs() if c.state is CertState.ACTIVE)
    assert failovers == (n + 1) // 2 and active == {"b": n}, (failovers, active)
    assert snap["vault_loads_by_ca"] == {"a": n} and snap["connects"] == 0, snap
    out["incident_tick_s"] = round(t, 3)
    out["incident_events"] = kinds(rep)
    out["incident_tick_io"] = snap

    # after the incident: every site is short of an independent standby
    after_times, after_events = [], []
    for _ in range(5):
        clock.now += timedelta(seconds=5)
        t, rep, snap = timed(daemon.tick, probe)
        after_times.append(t)
        after_events.append(kinds(rep))
    out["after_incident_tick_s"] = round(statistics.median(after_times), 4)
    out["after_incident_events_per_tick"] = after_events[-1]
    out["after_incident_pending_sites"] = len(daemon.pending)
    out["after_incident_io"] = snap
    daemon.close()

    out.update({
        "full_tick_per_site_ms": round(1000 * full / n, 3),
        "first_tick_per_site_ms": round(1000 * out["first_scheduled_tick_s"] / n, 3),
        "idle_tick_per_site_us": round(1e6 * idle / n, 2),
        "incident_tick_per_site_ms": round(1000 * out["incident_tick_s"] / n, 3),
        "ratio_idle_to_full": round(idle / full, 5),
        "ratio_first_to_full": round(out["first_scheduled_tick_s"] / full, 3),
        "ratio_incident_to_full": round(out["incident_tick_s"] / full, 3),
        "ratio_no_ari_to_full": round(out["full_tick_no_ari_s"] / full, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
    })
    return out


def table(r: dict[str, Any]) -> str:
    n = r["sites"]
    rows = [
        ("full tick, every check (`Engine.tick()`, baseline, median of 3)",
         r["full_tick_s"], f"{r['full_tick_per_site_ms']} ms", 1.0, r["full_tick_io"]),
        ("full tick, ARI directory look-up stubbed (attribution only)",
         r["full_tick_no_ari_s"], f"{round(1000 * r['full_tick_no_ari_s'] / n, 3)} ms",
         r["ratio_no_ari_to_full"], r["full_tick_no_ari_io"]),
        ("first scheduled daemon tick (everything due)", r["first_scheduled_tick_s"],
         f"{r['first_tick_per_site_ms']} ms", r["ratio_first_to_full"],
         r["first_scheduled_tick_io"]),
        ("scheduled daemon tick, nothing due (median)", r["idle_tick_s"],
         f"{r['idle_tick_per_site_us']} µs", r["ratio_idle_to_full"], r["idle_tick_io"]),
        (f"distrust CA a: {r['incident_events'].get('failover', 0)} failovers",
         r["incident_tick_s"], f"{r['incident_tick_per_site_ms']} ms",
         r["ratio_incident_to_full"], r["incident_tick_io"]),
        ("scheduled tick after the incident (median of 5)", r["after_incident_tick_s"],
         f"{round(1000 * r['after_incident_tick_s'] / n, 3)} ms",
         round(r["after_incident_tick_s"] / r["full_tick_s"], 4), r["after_incident_io"]),
    ]
    lines = [(f"| tick ({n} sites, {r['certificates']} certificates) | seconds | per site "
              "| / full tick | connects (refused) | vault loads |"),
             "|---|---:|---:|---:|---:|---:|"]
    for label, s, per, ratio, io in rows:
        lines.append(f"| {label} | {s} | {per} | {ratio} | {io['connects']} ({io['refused']}) "
                     f"| {io['vault_loads']} |")
    lines.append("")
    lines.append(f"ratio idle / full: {r['ratio_idle_to_full']}; peak RSS {r['peak_rss_mib']} MiB; "
                 f"setup {r['setup_s']} s; ARI finding: {r['ari_finding']}")
    lines.append(f"full tick fetches: {r['full_tick_io']['fetch_urls']} "
                 f"(median {r['full_tick_io']['fetch_median_ms']} ms each)")
    lines.append(f"incident events: {r['incident_events']}; after-incident events per tick: "
                 f"{r['after_incident_events_per_tick']}, pending sites "
                 f"{r['after_incident_pending_sites']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--idle-ticks", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.sites < 2:
        ap.error("--sites must be at least 2")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="certfailover-fleet-") as d:
        r = run(args.sites, args.idle_ticks, Path(d))
    r["wall_s"] = round(time.perf_counter() - t, 1)
    if args.json:
        json.dump(r, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(table(r))
        print(f"wall-clock {r['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
