"""Failover under load: zero failed requests/handshakes, and the switch latency, per server.

For each of nginx, apache, haproxy (real, on loopback, started by lab.webservers):
  1. baseline: wrk opens a new TLS connection per request (`Connection: close`) for D seconds,
     no failover;
  2. failover run: the same load, and after D/3 seconds deploy.activate switches the site to a
     certificate from another CA (then back again at 2D/3). A Python prober thread does its own
     handshakes all along and counts failures.
Reports wrk's failed requests (socket errors + non-2xx), the prober's failed handshakes, the
switch latency (decision to the first handshake showing the new leaf, from ActivationResult),
and the throughput ratio failover/baseline measured in the same run.

    .venv/bin/python bench/bench_failover_load.py [--seconds 6] [--connections 8] [nginx ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from certfailover.deploy import Activation, activate
from certfailover.probe import ProbeError, leaf_sha256, served_chain
from certfailover.servers import make_adapter
from certfailover.store.vault import Vault
from certfailover_lab.webservers import LabCA, VHost, WebServer, chain_validator, start

SNI = "www.test"


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    socket_errors: int
    non_2xx: int


def run_wrk(srv: WebServer, seconds: float, connections: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s",
         "-H", "Connection: close", "-H", f"Host: {SNI}",
         f"https://{srv.endpoint}/"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def parse_wrk(out: str) -> WrkResult:
    m = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not rps:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(int(m.group(1)), float(rps.group(1)),
                     sum(int(g) for g in errs.groups()) if errs else 0,
                     int(non2.group(1)) if non2 else 0)


class Prober(threading.Thread):
    """Handshakes continuously; counts failures (wrk's SNI is not set, so we check ours)."""

    def __init__(self, srv: WebServer) -> None:
        super().__init__(daemon=True)
        self.srv, self.stop_flag = srv, threading.Event()
        self.ok = self.failed = 0
        self.leaves: set[str] = set()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                self.leaves.add(leaf_sha256(served_chain(self.srv.endpoint, SNI, timeout=5)[0]))
                self.ok += 1
            except ProbeError:
                self.failed += 1


def bench_one(kind: str, seconds: float, connections: int, root: Path) -> dict[str, object]:
    vault = Vault(root / kind / "vault")
    vault.ensure()
    a, b = LabCA.create("ca-a"), LabCA.create("ca-b")
    da, sha_a = a.issue_into(vault, "www", [SNI])
    db, sha_b = b.issue_into(vault, "www", [SNI])
    vault.point_live("www", da)
    validate = chain_validator([a.root.cert, b.root.cert])
    with start(kind, root / kind / "srv", [VHost(SNI, (vault.live_path("www"),))]) as srv:
        adapter = make_adapter(srv.spec)
        base_out, _ = run_wrk(srv, seconds, connections).communicate()
        base = parse_wrk(base_out)

        prober = Prober(srv)
        prober.start()
        wrk = run_wrk(srv, seconds, connections)
        t_start = time.monotonic()
        results = []
        for when, (d, sha) in ((seconds / 3, (db, sha_b)), (2 * seconds / 3, (da, sha_a))):
            time.sleep(max(0.0, t_start + when - time.monotonic()))
            [r] = activate(vault, adapter, [Activation("www", d, sha, (srv.endpoint,), SNI)],
                           validate=validate)
            results.append(r)
        out, _ = wrk.communicate()
        prober.stop_flag.set()
        prober.join()
        load = parse_wrk(out)
    return {
        "server": kind, "baseline_rps": base.rps, "failover_rps": load.rps,
        "ratio": load.rps / base.rps if base.rps else float("nan"),
        "requests": load.requests, "failed_requests": load.socket_errors + load.non_2xx,
        "baseline_failed": base.socket_errors + base.non_2xx,
        "probe_handshakes": prober.ok, "probe_failed": prober.failed,
        "switches_ok": all(r.ok for r in results),
        "switch_latency_ms": [round(r.seconds * 1000, 1) for r in results],
        "leaves_seen": len(prober.leaves),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("servers", nargs="*", default=["nginx", "apache", "haproxy"])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        rows = [bench_one(k, args.seconds, args.connections, Path(tmp)) for k in args.servers]
    print("| server | baseline req/s | req/s during failover | ratio | requests | failed requests "
          "| probe handshakes | failed handshakes | switch latency ms (2 switches) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['baseline_rps']:.0f} | {r['failover_rps']:.0f} | "
              f"{r['ratio']:.2f} | {r['requests']} | {r['failed_requests']} | "
              f"{r['probe_handshakes']} | {r['probe_failed']} | {r['switch_latency_ms']} |")
    bad = [r["server"] for r in rows if r["failed_requests"] or r["probe_failed"]
           or not r["switches_ok"] or r["leaves_seen"] != 2]
    if bad:
        raise SystemExit(f"FAILED: failed requests/handshakes or switch not verified on {bad}")


if __name__ == "__main__":
    main()
