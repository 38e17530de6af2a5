"""Entries per second read and verified by the CT watch beside certspotter, against the same
lab CT log on loopback, same run.

    .venv/bin/python bench/bench_ct.py [--entries 20000] [--rounds 3]

The lab log (certfailover_lab.ctlog) is filled with distinct real certificates (EC P-256 leaves
from one lab CA, a few site names among them). Each round, alternating which goes first:
- the watch: a fresh store, `start = "beginning"`, batch 1000: one `Watch.poll()` = signed tree
  head verified, every entry downloaded, hashed into the compact tree, parsed and matched,
  the root compared with the signed one, the position saved;
- certspotter (Debian 0.16): a fresh state directory, the same log list and a watch list of
  the same names; timed from start until its state.json holds a verified tree head of the
  full size (it has then downloaded, parsed, matched every entry and recomputed the root).
Both read from the same single-threaded-per-connection Python server, one request at a time,
so the server's cost is in both figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from certfailover.ct import loglist
from certfailover.ct.settings import CTSettings
from certfailover.ct.watch import Watch
from certfailover.store.db import Database
from certfailover_lab import pki
from certfailover_lab.ctlog import CTLog

SITES = {"shop": ("shop.example.test",), "blog": ("blog.example.test",)}


def fill(log: CTLog, n: int) -> None:
    ca = pki.make_intermediate(pki.make_root("Bench Root"), "Bench CA")
    for i in range(n):
        names = ["shop.example.test"] if i % 5000 == 17 else [f"host{i}.example.org"]
        leaf, _ = pki.make_leaf(ca, names, key=ca.key)  # one key: building is the slow part
        log.add_chain([leaf, ca.cert])


def run_watch(log: CTLog, work: Path) -> float:
    db = Database(f"sqlite:///{work / 'state.db'}")
    db.migrate()
    events: list[object] = []
    w = Watch(CTSettings(log_list="-", start="beginning", batch=1000, timeout=60), db, SITES,
              logs=loglist.parse(log.log_list(), "bench"), record=lambda *e: events.append(e))
    t0 = time.perf_counter()
    (res,) = w.poll()
    took = time.perf_counter() - t0
    assert res.entries == log.size and not res.problem, res
    return took


def run_certspotter(log: CTLog, work: Path) -> float:
    (work / "logs.json").write_text(json.dumps(log.log_list()))
    (work / "watchlist").write_text("shop.example.test\nblog.example.test\n")
    (work / "config").mkdir()
    state = work / "state" / "logs" / base64.urlsafe_b64encode(log.log_id).decode().rstrip("=") \
        / "state.json"
    env = dict(os.environ, CERTSPOTTER_CONFIG_DIR=str(work / "config"), HOME=str(work))
    t0 = time.perf_counter()
    proc = subprocess.Popen(["certspotter", "-stdout", "-no_save", "-logs", str(work / "logs.json"),
                             "-state_dir", str(work / "state"), "-watchlist",
                             str(work / "watchlist")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        while True:
            try:
                sth = json.loads(state.read_text()).get("verified_sth") or {}
            except (OSError, ValueError):
                sth = {}
            if sth.get("tree_size") == log.size:
                return time.perf_counter() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"certspotter exited: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("certspotter") is None:
        raise SystemExit("certspotter is not installed (make deps)")
    with CTLog() as log:
        t0 = time.perf_counter()
        fill(log, args.entries)
        print(f"lab log: {log.size} entries in {time.perf_counter() - t0:.1f} s")
        ours, theirs = [], []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
                if r % 2:
                    theirs.append(run_certspotter(log, Path(b)))
                    ours.append(run_watch(log, Path(a)))
                else:
                    ours.append(run_watch(log, Path(a)))
                    theirs.append(run_certspotter(log, Path(b)))
            print(f"round {r + 1}: watch {log.size / ours[-1]:,.0f}/s  "
                  f"certspotter {log.size / theirs[-1]:,.0f}/s")
    w, c = statistics.median(ours), statistics.median(theirs)
    print(f"median: watch {log.size / w:,.0f} entries/s ({w:.2f} s), certspotter "
          f"{log.size / c:,.0f} entries/s ({c:.2f} s): ratio {c / w:.2f}x (goal >= 1)")


if __name__ == "__main__":
    main()
