"""A CA's bad day: operator distrust -> verified switch, with the other CAs healthy (baseline)
and with one CA hanging (connection accepted, no answer) and another dripping a byte every 2 s.

Three Pebble CAs (C and B behind lab.faults.FaultProxy), a real nginx, the daemon as
`certfailover run` builds it (interval 1 s, min_standbys = 2, issue_timeout = 60), in-process.
Each round distrusts the active CA and undistrusts the previous one, so the site switches back
and forth; the time is from the `distrust` event to the daemon's `failover` event (recorded
after the handshake proved the new leaf). Both conditions run in the same process, one after
the other, and the ratio is reported.

    .venv/bin/python bench/bench_faults.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from certfailover import config as config_mod
from certfailover.wiring import build, build_daemon
from certfailover_lab.faults import FaultProxy
from certfailover_lab.pebble import ChallTestSrv, PebbleCA
from certfailover_lab.ports import free_port
from certfailover_lab.sitelab import make_lab
from certfailover_lab.sites import LabCAEntry

lab_of = contextmanager(make_lab)


def _port(ca: PebbleCA) -> int:
    return int(ca.directory_url.split(":")[2].split("/")[0])


def _entry(ca: PebbleCA, proxy: FaultProxy) -> LabCAEntry:
    return LabCAEntry(ca.name, f"https://127.0.0.1:{proxy.port}/{ca.directory_url.split('/', 3)[3]}",
                      ca.ca_bundle)


def run(work: Path, cas: list[PebbleCA], http01: int, *, faulty: bool, rounds: int) -> list[float]:
    a, b, c = cas
    b_proxy = FaultProxy(_port(b))
    c_proxy = FaultProxy(_port(c), mode="hang" if faulty else "pass")
    entries = [LabCAEntry(a.name, a.directory_url, a.ca_bundle), _entry(b, b_proxy),
               _entry(c, c_proxy)]
    times: list[float] = []
    work.mkdir(parents=True, exist_ok=True)
    try:
        with lab_of(work, entries, [x.root_pem() for x in cas], http01,
                    daemon={"verify_timeout": 5, "issue_timeout": 60, "interval": 1},
                    site_extra={"min_standbys": 2}) as lab:
            assert lab.rt.engine.order(lab.rt.config.site("www"), b.name) is not None
            if faulty:
                b_proxy.mode = "drip"
            rt = build(config_mod.load(lab.config_path))
            daemon = build_daemon(rt.engine, rt.config, interval=1)
            t = threading.Thread(target=daemon.run, daemon=True)
            t.start()
            try:
                deadline = time.monotonic() + 30
                while not any(x.state.value == "active" for x in lab.rt.db.certs("www")):
                    if time.monotonic() > deadline:
                        raise RuntimeError("nothing activated")
                    time.sleep(0.05)
                time.sleep(2)  # the first tick's network checks and orders are under way
                previous: str | None = None
                for _ in range(rounds):
                    active = lab.active().ca
                    n_before = sum(e.kind == "failover" for e in lab.rt.db.events(site="www"))
                    ev = rt.engine.record(None, "www", "distrust", "bench", ca=active)
                    rt.db.distrust(active, ev.time, "bench")
                    if previous is not None:
                        rt.db.undistrust(previous)
                    previous = active
                    deadline = time.monotonic() + 30
                    while True:
                        fos = [e for e in lab.rt.db.events(site="www") if e.kind == "failover"]
                        if len(fos) > n_before:
                            times.append((fos[-1].time - ev.time).total_seconds())
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError("no failover within 30 s")
                        time.sleep(0.01)
                    time.sleep(1.5)  # let the undistrusted CA's certificate be judged again
            finally:
                daemon.stop_event.set()
                daemon._wake.set()
                t.join(10)
                daemon.close(5)
    finally:
        b_proxy.close()
        c_proxy.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        work = Path(tmp)
        dns = ChallTestSrv(work / "dns")
        http01 = free_port()
        cas = [PebbleCA(work / n, name=n, http_port=http01, dns_server=dns.dns_address,
                        nonce_reject_percent=0) for n in ("ca-a", "ca-b", "ca-c")]
        try:
            base = run(work / "healthy", cas, http01, faulty=False, rounds=args.rounds)
            bad = run(work / "faulty", cas, http01, faulty=True, rounds=args.rounds)
        finally:
            for ca in cas:
                ca.stop()
            dns.stop()
    for name, xs in (("all CAs healthy (baseline)", base), ("C hangs, B drips", bad)):
        print(f"{name:28s} n={len(xs)} median {statistics.median(xs):.2f}s "
              f"max {max(xs):.2f}s  [{', '.join(f'{x:.2f}' for x in xs)}]")
    print(f"ratio faulty/healthy (median): {statistics.median(bad) / statistics.median(base):.2f}; "
          f"goal: every switch <= interval + 2 s = 3 s (max {max(bad):.2f}s)")


if __name__ == "__main__":
    main()
