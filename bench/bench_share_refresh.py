"""What one fleet controller's share refresh costs (`ControllerShare.refresh`, every ttl / 3).

Setup (not timed): the lab's PostgreSQL; N sites (default 10,000) with two certificates each in
`certs`, every certificate sealed in `fleet_sealed` and desired in `fleet_desired` (one row per
site), rows written straight into the database. C controllers (default 3): the measured one
and C - 1 others simulated by their heartbeat and site leases (held for a day), so the measured
controller holds ceil(N / C) sites; the key material of its sites' certificates is in its vault
(a `privkey.pem` per certificate directory), the others' is not.

Measured, per refresh (median of --refreshes, min and max):

  idle      nothing changed since the last refresh
  change    another controller stored and sealed 5 new certificates for sites held here and
            published 10 desired rows in between: the refresh must write the 5 from their
            sealed records and see the 10 rows (checked)
  full      a refresh that reads everything again (the safety net; skipped on code without it)

For each: the whole refresh, the lease part (heartbeat, renew/claim the site leases), the
material and desired-state part (the rest: what the incremental refresh changes), SQL
statements, and rows returned by SELECTs.

Run: .venv/bin/python bench/bench_share_refresh.py [--sites N] [--controllers C] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from certfailover.fleet import coord, sealed
from certfailover.fleet.coord import Leases
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.fleet.share import ControllerShare
from certfailover.store import db as dbmod
from certfailover.store.vault import Vault
from certfailover_lab.postgres import PostgresServer

NOW = datetime.now(UTC)
PLAIN = Plain(b"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n", b"",
              b"-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n")


class Counter:
    """SQL statements and rows returned by SELECTs on the engines it watches."""

    def __init__(self) -> None:
        self.statements = self.rows = 0

    def watch(self, engine: sa.Engine) -> None:
        @sa.event.listens_for(engine, "after_cursor_execute")
        def _count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            self.statements += 1
            if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
                self.rows += cursor.rowcount


def cert_row(vault: Vault, site: str, ca: str, serial: str, created: datetime) -> dict[str, Any]:
    return {"id": f"{site}/{ca}/{serial}", "site": site, "ca": ca, "serial": serial,
            "not_before": NOW, "not_after": NOW + timedelta(days=90), "sha256": "ab" * 32,
            "key_type": "ec-p256", "issuer_dn": "CN=bench", "state": "standby",
            "created": created, "path": str(vault.archive_dir(site, ca, serial))}


def setup(url: str, n: int, controllers: int, vault: Vault, ring: Keyring) -> list[str]:
    """Rows for N sites; returns the sites the measured controller will hold."""
    sites = [f"s{i:05d}" for i in range(n)]
    share = math.ceil(n / controllers)
    mine = sites[:share]
    rec = sealed.seal(ring, "x", "x", PLAIN)
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        rows = [cert_row(vault, s, ca, "1", NOW) for s in sites for ca in ("a", "b")]
        for part in coord.chunks(rows):
            conn.execute(dbmod.certs.insert(), part)
        for part in coord.chunks(rows):
            conn.execute(dbmod.fleet_sealed.insert(), [
                {"cert_id": r["id"], "site": r["site"], "kek_id": rec.kek_id, "nonce": rec.nonce,
                 "ciphertext": rec.ciphertext, "sealed_at": NOW} for r in part])
        for names in coord.chunks(sites):
            conn.execute(dbmod.fleet_desired.insert(), [
                {"site": s, "cert_id": f"{s}/a/1", "sha256": "ab" * 32, "epoch": 1,
                 "since": NOW, "chain": None} for s in names])
        day = NOW + timedelta(days=1)
        for k in range(1, controllers):
            theirs = sites[share * k:share * (k + 1)]
            conn.execute(dbmod.fleet_leases.insert(), [
                {"work": f"controller:other{k}", "holder": f"other{k}", "expires": day},
                *({"work": f"site:{s}", "holder": f"other{k}", "expires": day} for s in theirs)])
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))  # the statistics autovacuum keeps on a live database
    eng.dispose()
    for s in mine:
        for ca in ("a", "b"):
            d = vault.archive_dir(s, ca, "1")
            d.mkdir(parents=True)
            (d / "privkey.pem").write_bytes(PLAIN.key_pem)
    return mine


def change(url: str, vault: Vault, ring: Keyring, mine: list[str], round_: int) -> None:
    """Another controller: 5 new sealed certificates for sites held here, 10 desired rows."""
    eng = sa.create_engine(url)
    serial = f"n{round_}"
    with eng.begin() as conn:
        new = [cert_row(vault, s, "a", serial, NOW + timedelta(minutes=round_)) for s in mine[:5]]
        conn.execute(dbmod.certs.insert(), new)
        sealed.seal_many(conn, ring, [(r["id"], r["site"], PLAIN) for r in new])
        for s in mine[:10]:
            conn.execute(dbmod.fleet_desired.update().where(dbmod.fleet_desired.c.site == s)
                         .values(cert_id=f"{s}/a/{serial}" if s in mine[:5] else f"{s}/b/1",
                                 since=NOW + timedelta(minutes=round_)))
    eng.dispose()


def timed(share: ControllerShare, counter: Counter) -> dict[str, float]:
    """One refresh: total and lease-part seconds, statements and SELECT rows."""
    lease = [0.0]
    balance = share._balance

    def _balance() -> tuple[frozenset[str], frozenset[str]]:
        t = time.perf_counter()
        try:
            return balance()
        finally:
            lease[0] += time.perf_counter() - t

    share._balance = _balance  # type: ignore[method-assign]
    s0, r0 = counter.statements, counter.rows
    t0 = time.perf_counter()
    try:
        share.refresh()
    finally:
        del share._balance
    total = time.perf_counter() - t0
    return {"total": total, "leases": lease[0], "material": total - lease[0],
            "statements": counter.statements - s0, "rows": counter.rows - r0}


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(runs)}
    for key in ("total", "leases", "material"):
        vals = [r[key] for r in runs]
        out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    out["statements"] = statistics.median(r["statements"] for r in runs)
    out["rows"] = statistics.median(r["rows"] for r in runs)
    return out


def run(n: int, controllers: int, refreshes: int, tmp: Path, pg: PostgresServer
        ) -> dict[str, Any]:
    url = pg.create_database(f"share_{n}_{os.getpid()}")
    db = dbmod.Database(url)
    db.migrate()
    ring = Keyring(Kek(os.urandom(32)))
    vault = Vault(tmp / "store")
    vault.ensure()
    t = time.perf_counter()
    mine = setup(url, n, controllers, vault, ring)
    print(f"setup: {n} sites, {2 * n} certificates, {len(mine)} held here "
          f"({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    share = ControllerShare(Leases(coord.make_engine(url, "bench share"), "bench"),
                            [f"s{i:05d}" for i in range(n)], db=db, vault=vault, ring=ring)
    counter = Counter()
    counter.watch(share.engine)
    counter.watch(db.engine)
    first = timed(share, counter)
    assert share.owned == frozenset(mine), (len(share.owned), len(mine))
    idle = [timed(share, counter) for _ in range(refreshes)]
    changed = []
    for k in range(1, refreshes + 1):
        change(url, vault, ring, mine, k)
        changed.append(timed(share, counter))
        for s in mine[:5]:  # written from the sealed records
            assert (vault.archive_dir(s, "a", f"n{k}") / "privkey.pem").is_file(), s
        assert share.served_target is not None
        assert share._desired[mine[9]][0] == f"{mine[9]}/b/1"
        assert share._desired[mine[0]][0] == f"{mine[0]}/a/n{k}"
    out: dict[str, Any] = {"sites": n, "certs": 2 * n, "controllers": controllers,
                           "held": len(mine), "first": first, "idle": summary(idle),
                           "change": summary(changed)}
    force: Callable[[], None] | None = getattr(share, "resync_next", None)
    if force is not None:
        full = []
        for _ in range(refreshes):
            force()
            full.append(timed(share, counter))
        out["full"] = summary(full)
    return out


def show(res: dict[str, Any]) -> None:
    print(f"{res['sites']} sites, {res['certs']} certificates, {res['controllers']} "
          f"controllers, {res['held']} sites held by the measured one")
    f = res["first"]
    print(f"  first     total {f['total'] * 1000:8.1f} ms  statements {f['statements']:4.0f}"
          f"  rows {f['rows']:7.0f}")
    for key in ("idle", "change", "full"):
        if key not in res:
            continue
        r = res[key]
        print(f"  {key:8}  total {r['total']['median'] * 1000:8.1f} ms "
              f"(min {r['total']['min'] * 1000:.1f}, max {r['total']['max'] * 1000:.1f})"
              f"  leases {r['leases']['median'] * 1000:7.1f} ms"
              f"  material+desired {r['material']['median'] * 1000:7.1f} ms"
              f"  statements {r['statements']:4.0f}  rows {r['rows']:7.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=10_000)
    ap.add_argument("--controllers", type=int, default=3)
    ap.add_argument("--refreshes", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as pg:
        res = run(args.sites, args.controllers, args.refreshes, Path(tmp), pg)
    res["host"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                   "machine": platform.machine()}
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        show(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
