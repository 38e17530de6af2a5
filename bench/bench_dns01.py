"""Issuance time with DNS-01 (RFC 2136 + TSIG to a real BIND, propagation checked at the
zone's NS set) beside HTTP-01 (standalone responder), same CA, same run.

    .venv/bin/python bench/bench_dns01.py [--n 15]

One Pebble CA resolves through the lab BIND (`-dnsserver`), which answers A 127.0.0.1 for
every name in example.test, so the same CA validates both challenge types. Each issuance uses
a fresh name (no authorization reuse), a fresh EC P-256 key + CSR; the account already exists;
nonce rejection is off. The runs alternate (HTTP-01, DNS-01, DNS-01 wildcard + base, ...) so
that load on this shared machine hits all three alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from certfailover import keys
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import StandaloneSolver
from certfailover.issuers.dns01 import Journal, Rfc2136Solver, TsigKey
from certfailover.model import utcnow
from certfailover_lab.bind import BindServer
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.ports import free_port


def _time(issuer: AcmeIssuer, names: list[str]) -> float:
    csr = keys.csr_pem(keys.generate("ec-p256"), names)
    started = time.perf_counter()
    issuer.issue(csr, deadline=utcnow() + timedelta(seconds=60))
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=15)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-dns01-"))
    port = free_port()
    with BindServer(work / "bind") as bind, PebbleCA(
        work / "ca", name="bench", http_port=port, dns_server=bind.address,
        nonce_reject_percent=0,
    ) as ca:
        def issuer(name: str, solver: object) -> AcmeIssuer:
            return AcmeIssuer(name, ca.directory_url, email=None, ca_bundle=ca.ca_bundle,
                              account_key_path=work / f"{name}.pem", solver=solver)  # type: ignore[arg-type]

        http = issuer("http", StandaloneSolver("127.0.0.1", port))
        dns = issuer("dns", Rfc2136Solver(
            bind.address, TsigKey(bind.key_name, bind.key_secret), nameserver_port=bind.port,
            journal=Journal(work / "journal")))
        _time(http, ["warm-h.example.test"])  # account, directory, first connection
        _time(dns, ["warm-d.example.test"])
        runs: dict[str, list[float]] = {"http-01": [], "dns-01": [], "dns-01 wildcard+base": []}
        for _ in range(args.n):
            tag = uuid.uuid4().hex[:10]
            runs["http-01"].append(_time(http, [f"h{tag}.example.test"]))
            runs["dns-01"].append(_time(dns, [f"d{tag}.example.test"]))
            runs["dns-01 wildcard+base"].append(
                _time(dns, [f"w{tag}.example.test", f"*.w{tag}.example.test"]))
        left = len(list((work / "journal").glob("*.json")))
    base = statistics.median(runs["http-01"])
    print(f"n={args.n} issuances each, fresh names; median / p90 / max (ms), ratio of medians "
          "to HTTP-01")
    for label, xs in runs.items():
        xs = sorted(xs)
        p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
        med = statistics.median(xs)
        print(f"  {label:22s} {med * 1000:7.1f} {p90 * 1000:7.1f} {xs[-1] * 1000:7.1f}"
              f"   x{med / base:.2f}")
    print(f"TXT records not removed (journal entries left): {left}")


if __name__ == "__main__":
    main()
