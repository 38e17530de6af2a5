"""One big switch on one real nginx (or HAProxy, `--server haproxy`): deploy.activate of N sites in one batch (journal, flip,
one reload, handshake proof), the path every mass failover takes, on a single host and on
each fleet agent.

Setup (not timed): a test PKI (certfailover.testing), two certificates per site in a vault,
live -> the first, one nginx serving all N sites on loopback. Timed: the batch switch to the
second certificates. Printed as JSON: seconds, seconds per phase, handshakes per site.

Run: .venv/bin/python bench/bench_deploy_batch.py [--sites 2000] [--server haproxy]
Compare two revisions run by run (BENCHMARKS.md): PYTHONPATH=<other checkout>/src to run the
same script against another deploy.py (add --reload-argv when that revision's nginx adapter has
no `pid_file` option), or PYTHONPATH=<other>/src:<other>/lab/src with the other checkout's
script, for the other revision as a whole.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import deploy, keys
from certfailover.probe import leaf_sha256
from certfailover.servers import make_adapter
from certfailover.store.vault import Vault
from certfailover.testing.pki import make_leaf
from certfailover_lab.webservers import LabCA, VHost, chain_validator, start_haproxy, start_nginx


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--reload-argv", dest="pid_file", action="store_false",
                    help="reload with `nginx -s reload` (default: SIGHUP to the master named "
                         "by the pid_file server option, after `nginx -t`)")
    ap.add_argument("--server", choices=("nginx", "haproxy"), default="nginx",
                    help="haproxy: hot swaps over the Runtime API instead of one reload")
    args = ap.parse_args()
    n = args.sites
    tmp = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    cas = {"a": LabCA.create("a"), "b": LabCA.create("b")}
    vault = Vault(tmp / "store")
    vault.ensure()
    target: dict[str, tuple[Path, str]] = {}
    for i in range(n):
        site = f"s{i:05d}"
        for name, ca in cas.items():
            leaf, key = make_leaf(ca.intermediate, [f"{site}.test"])
            path = vault.save(site, name, format(leaf.serial_number, "x"),
                              leaf_pem=leaf.public_bytes(Encoding.PEM),
                              chain_pem=ca.intermediate.cert.public_bytes(Encoding.PEM),
                              key_pem=keys.key_pem(key))
            if name == "a":
                vault.point_live(site, path)
            else:
                target[site] = (path, leaf_sha256(leaf))
    vhosts = [VHost(f"{s}.test", (tmp / "store" / "live" / s,)) for s in target]
    if args.server == "haproxy":
        srv = start_haproxy(tmp / "haproxy", vhosts)
    else:
        srv = start_nginx(tmp / "nginx", vhosts, pid_file=args.pid_file)
    probes = {"n": 0}
    real = deploy.served_chain
    lock = threading.Lock()  # deploy handshakes from a pool of threads

    def counted(*args: Any, **kw: Any) -> Any:
        with lock:
            probes["n"] += 1
        return real(*args, **kw)
    deploy.served_chain = counted  # type: ignore[assignment]
    try:
        adapter = make_adapter({**srv.spec, "name": "web"})
        batch = [deploy.Activation(site=s, target=p, expected_sha256=sha,
                                   endpoints=(srv.endpoint,), sni=f"{s}.test")
                 for s, (p, sha) in target.items()]
        marks: list[tuple[str, float]] = []
        t0 = time.monotonic()
        results = deploy.activate(vault, adapter, batch,
                                  validate=chain_validator([c.root.cert for c in cas.values()]),
                                  verify_timeout=600, settle=0.3,
                                  on_phase=lambda p: marks.append((p, time.monotonic() - t0)))
        took = time.monotonic() - t0
        assert all(r.ok for r in results), [r.message for r in results if not r.ok][:3]
    finally:
        srv.stop()
    phases = {name: round(marks[i + 1][1] - at, 2) for i, (name, at) in enumerate(marks[:-1])}
    print(json.dumps({"sites": n, "seconds": round(took, 2), "phases_s": phases,
                      "handshakes_per_site": round(probes["n"] / n, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
