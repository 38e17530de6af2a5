"""The status page at fleet scale (issue 15): the overview of 1,000 sites within 100 ms.

A synthetic store built through the store API (no CA, no vault material): N sites (default
1000) on two CAs, each with an active certificate and a standby, six findings per certificate
(validity with its renewal point, key, names, chain, OCSP, a trust verdict; every tenth site's
standby failing, every seventh active warning), and three events per site. SQLite in a
temporary directory.

Measured in one run:
  snapshot    status_document(): every site's status read from the store (what the page's
              background thread does every `refresh` seconds; requests never wait for it)
  json        the baseline: the snapshot rendered as `certfailover status --json` prints it
              (json.dumps, indent=2), median of --repeat
  overview    the overview HTML from the snapshot: rows built, sorted, rendered (cold: rows
              recomputed each time), median of --repeat
  warm        the overview HTML when the snapshot's rows are cached (every request after the
              first one on a snapshot), median of --repeat
  http /      GET / on a running WebServer (loopback, keep-alive off): the page as a browser
              gets it, median of --repeat
  http json   GET /status.json on the same server, median of --repeat

Run: .venv/bin/python bench/bench_web.py [--sites N] [--repeat K] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certfailover import config as config_mod
from certfailover.model import Cert, CertState, Event, Finding, Severity
from certfailover.store.db import Database
from certfailover.web.pages import Pages
from certfailover.web.server import App, WebServer
from certfailover.web.settings import WebSettings
from certfailover.web.source import status_document


def build_store(tmp: Path, sites: int) -> tuple[config_mod.Config, Database]:
    bundle = tmp / "bundle.pem"
    bundle.write_text("")
    lines = ["[store]", f"directory = {json.dumps(str(tmp / 'store'))}"]
    for ca in ("alpha", "beta"):
        lines += ["[[ca]]", f'name = "{ca}"', f'directory = "https://127.0.0.1:9/{ca}/dir"']
    for i in range(sites):
        lines += ["[[site]]", f'name = "site{i:04d}"', f'domains = ["s{i}.example.test"]',
                  'cas = ["alpha", "beta"]', f"trust = [{json.dumps(str(bundle))}]"]
    path = tmp / "certfailover.toml"
    path.write_text("\n".join(lines) + "\n")
    cfg = config_mod.load(path, env={})
    (tmp / "store").mkdir(mode=0o700)
    db = Database(cfg.database)
    db.migrate()
    now = datetime.now(UTC)
    events: list[Event] = []
    for i, site in enumerate(cfg.sites):
        for j, ca in enumerate(("alpha", "beta") if i % 2 else ("beta", "alpha")):
            nb = now - timedelta(days=10 + i % 50)
            na = nb + timedelta(days=90)
            cid = f"{site.name}/{ca}/{i:04x}{j}"
            db.add_cert(Cert(cid, site.name, ca, f"{i:04x}{j}", nb, na, f"{i:060x}{j:04x}",
                             "ec-p256", f"CN={ca} intermediate",
                             CertState.ACTIVE if j == 0 else CertState.STANDBY, nb, f"/nowhere/{cid}"))
            renew = na - timedelta(days=30)
            bad = j == 1 and i % 10 == 0
            db.save_findings(cid, now, [
                Finding("validity", Severity.OK, f"valid, {(na - now).days} days left",
                        {"renew_at": renew.isoformat()}),
                Finding("key", Severity.OK, "ec-p256, not reused"),
                Finding("names", Severity.OK, "covers every domain"),
                Finding("chain", Severity.OK, "validates against the bundle"),
                Finding("ocsp", Severity.FAIL if bad else
                        Severity.WARN if (j == 0 and i % 7 == 0) else Severity.OK,
                        "revoked (keyCompromise)" if bad else "good, next update in 3 days"),
                Finding("trust", Severity.OK, "trusted by mozilla", {"program": "mozilla"}),
            ])
        events += [Event(now - timedelta(days=3), site.name, "issued", "issued", {}),
                   Event(now - timedelta(days=2), site.name, "activated", "activated", {}),
                   Event(now - timedelta(days=1), site.name, "failover", "failed over", {})]
    db.add_events(events)
    return cfg, db


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def http_get(srv: WebServer, path: str) -> bytes:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status}")
        return body
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as d:
        cfg, db = build_store(Path(d), args.sites)
        t = time.perf_counter()
        doc = status_document(db, None, cfg, datetime.now(UTC))
        snapshot_ms = (time.perf_counter() - t) * 1000
        fractions = {s.name: s.renew_fraction for s in cfg.sites}
        pages = Pages()
        html = pages.overview(doc, renew_fractions=fractions)
        assert html.count("<tr data-site=") == args.sites, "every site has its row"
        json_ms = median_ms(lambda: json.dumps(doc, indent=2), args.repeat)
        cold_ms = median_ms(lambda: Pages().overview(doc, renew_fractions=fractions), args.repeat)
        warm_ms = median_ms(lambda: pages.overview(doc, renew_fractions=fractions), args.repeat)
        srv = WebServer.start(App(WebSettings(("127.0.0.1", 0), refresh=3600), cfg, db, None))
        try:
            http_get(srv, "/")  # first request on the snapshot computes its rows
            http_ms = median_ms(lambda: http_get(srv, "/"), args.repeat)
            http_json_ms = median_ms(lambda: http_get(srv, "/status.json"), args.repeat)
        finally:
            srv.stop()
    out = {"sites": args.sites, "repeat": args.repeat, "snapshot_ms": round(snapshot_ms, 1),
           "json_ms": round(json_ms, 2), "overview_cold_ms": round(cold_ms, 2),
           "overview_warm_ms": round(warm_ms, 2), "http_overview_ms": round(http_ms, 2),
           "http_status_json_ms": round(http_json_ms, 2),
           "ratio_cold_vs_json": round(cold_ms / json_ms, 2),
           "ratio_http_vs_http_json": round(http_ms / http_json_ms, 2),
           "html_bytes": len(html), "machine": f"{platform.machine()} {platform.processor()}"}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.sites} sites; snapshot from the store {snapshot_ms:.0f} ms (background)")
        print(f"status --json render (baseline)   {json_ms:8.2f} ms")
        print(f"overview render, rows recomputed  {cold_ms:8.2f} ms  ({cold_ms / json_ms:.2f}x baseline)")
        print(f"overview render, rows cached      {warm_ms:8.2f} ms  ({warm_ms / json_ms:.2f}x baseline)")
        print(f"GET /            (HTTP, loopback) {http_ms:8.2f} ms  (goal <= 100 ms)")
        print(f"GET /status.json (HTTP, loopback) {http_json_ms:8.2f} ms")
    return 0 if http_ms <= 100 else 1


if __name__ == "__main__":
    raise SystemExit(main())
