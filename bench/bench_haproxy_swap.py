"""HAProxy hot swaps: the adapter's one interactive session per batch against one connection
per command (the adapter before commit "haproxy adapter: one Runtime API session per batch").

Setup (not timed): a test PKI, two certificates per site in a vault, one real HAProxy serving
N sites on loopback. Timed, alternately in the same run (this machine is noisy: pairs run
back to back share its load): one batch of N `set ssl cert` + `commit ssl cert` by
`HAProxyAdapter.apply` (session), then the same N by the baseline loop (`RuntimeAPI.command`:
a new connection for every command), each batch swapping to the other certificate set.
Printed as JSON: seconds per round for both, the per-round ratio and its median.

Run: .venv/bin/python bench/bench_haproxy_swap.py [--sites 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import keys
from certfailover.servers import LiveChange
from certfailover.servers.haproxy import HAProxyAdapter, RuntimeAPI, _payload
from certfailover.store.vault import Vault
from certfailover.testing.pki import make_leaf
from certfailover_lab.webservers import LabCA, VHost, start_haproxy


def per_command(api: RuntimeAPI, changes: Sequence[LiveChange], file: str) -> None:
    """The baseline: the same commands, one connection each."""
    for ch in changes:
        name = f"{ch.live}/{file}"
        src = ch.target / file
        out = api.command(f"set ssl cert {name} <<\n{_payload(src.read_bytes(), src)}\n")
        assert "Transaction" in out, out
        out = api.command(f"commit ssl cert {name}")
        assert "Success!" in out, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))
    ca = LabCA.create("a")
    vault = Vault(tmp / "store")
    vault.ensure()
    sets: list[dict[str, Path]] = [{}, {}]
    for i in range(args.sites):
        site = f"s{i:05d}"
        for k in (0, 1):
            leaf, key = make_leaf(ca.intermediate, [f"{site}.test"])
            sets[k][site] = vault.save(site, "a", format(leaf.serial_number, "x"),
                                       leaf_pem=leaf.public_bytes(Encoding.PEM),
                                       chain_pem=ca.intermediate.cert.public_bytes(Encoding.PEM),
                                       key_pem=keys.key_pem(key))
        vault.point_live(site, sets[0][site])
    srv = start_haproxy(tmp / "haproxy", [VHost(f"{s}.test", (vault.live_path(s),))
                                          for s in sets[0]])
    adapter = HAProxyAdapter("bench", tmp / "haproxy" / "admin.sock")
    assert adapter.socket_path is not None
    api = RuntimeAPI(adapter.socket_path)
    rows = []
    try:
        which = 1
        for _ in range(args.rounds):
            times = {}
            for mode in ("session", "per_command"):
                changes = [LiveChange(s, vault.live_path(s), p) for s, p in sets[which].items()]
                t0 = time.monotonic()
                if mode == "session":
                    assert adapter.apply(changes) is True
                else:
                    per_command(api, changes, adapter.file)
                times[mode] = time.monotonic() - t0
                which = 1 - which
            rows.append({"session_s": round(times["session"], 3),
                         "per_command_s": round(times["per_command"], 3),
                         "ratio": round(times["session"] / times["per_command"], 3)})
    finally:
        srv.stop()
    print(json.dumps({"sites": args.sites, "machine": platform.processor() or platform.machine(),
                      "rounds": rows,
                      "median_ratio": statistics.median(r["ratio"] for r in rows)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
