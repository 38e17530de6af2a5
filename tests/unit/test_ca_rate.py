"""A CA's `max_orders_per_hour` over the real engine (vault, SQLite, local checks) with fake
issuers: a mass failover spreads its orders over the hours instead of sending them all at once."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from test_daemon_schedule import T0
from test_engine_faults import SignsCSRs, scripted

from certfailover import config as config_mod
from certfailover import keys
from certfailover.testing import FakeClock, pki
from certfailover.wiring import Runtime, build

PEM = serialization.Encoding.PEM


def fleet(tmp_path: Path, clock: FakeClock, *, sites: int, cap: int | None,
          urgent: Sequence[str] = (), daemon: dict[str, Any] | None = None
          ) -> tuple[Runtime, dict[str, pki.Authority]]:
    """`sites` sites on CAs a and b, each with an active certificate from a and no standby (b's
    `max_orders_per_hour` is `cap`); the `urgent` ones are on c and b instead, active from c."""
    roots = {ca: pki.make_root(f"Root {ca}") for ca in ("a", "b", "c")}
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots.values())
    b: dict[str, Any] = {"name": "b", "directory": "https://127.0.0.1:1/b/dir"}
    if cap is not None:
        b["max_orders_per_hour"] = cap
    names = [f"s{i:02d}" for i in range(sites)] + list(urgent)
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "store")},
        "ca": [{"name": "a", "directory": "https://127.0.0.1:1/a/dir"}, b,
               {"name": "c", "directory": "https://127.0.0.1:1/c/dir"}],
        "site": [{"name": n, "domains": [f"{n}.example.test"],
                  "cas": ["c", "b"] if n in urgent else ["a", "b"], "trust": [str(bundle)]}
                 for n in names],
    }
    if daemon is not None:
        raw["daemon"] = daemon
    cfg = config_mod.parse(raw, file=str(tmp_path / "t.toml"), base=tmp_path, env={})
    rt = build(cfg, clock=clock)
    for n in names:
        ca = "c" if n in urgent else "a"
        leaf, key = pki.make_leaf(roots[ca], [f"{n}.example.test"],
                                  not_before=T0 - timedelta(hours=1))
        rt.engine.store_cert(rt.config.site(n), ca, leaf_pem=leaf.public_bytes(PEM),
                             chain_pem=b"", key_pem=keys.key_pem(key), source=f"test {ca}")
    return rt, roots


def missing_per_site(rt: Runtime) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in rt.db.events():
        if e.kind == "standby_missing":
            out[e.site] = out.get(e.site, 0) + 1
    return out


def test_a_mass_replacement_is_spread_over_the_hours(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt, roots = fleet(tmp_path, clock, sites=30, cap=10)
    b = SignsCSRs("b", roots["b"])
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b}
    scripted(rt)  # no network: every revocation answer is "good"
    rt.engine.tick()
    assert b.calls == 10, "the first tick orders what the cap leaves room for"
    missing = missing_per_site(rt)
    assert len(missing) == 20 and set(missing.values()) == {1}
    said = next(e for e in rt.db.events() if e.kind == "standby_missing")
    assert "CA b rate limit: 10 orders" in said.message and "max_orders_per_hour = 10" \
        in said.message and said.data["held"] == {"b": "ca_rate"}
    for minutes in (5, 20, 40, 59):  # within the hour: nothing more, nothing said again
        clock.set(T0 + timedelta(minutes=minutes))
        rt.engine.tick()
        assert b.calls == 10, minutes
    assert missing_per_site(rt) == missing, "waiting for room is said once per site"
    clock.set(T0 + timedelta(minutes=60))  # the first ten leave the window
    rt.engine.tick()
    assert b.calls == 20
    rt.engine.tick()
    assert b.calls == 20, "the next ten are in the window now"
    clock.set(T0 + timedelta(minutes=121))
    rt.engine.tick()
    assert b.calls == 30
    kinds = [e.kind for e in rt.db.events()]
    assert "issuance_failed" not in kinds
    assert missing_per_site(rt) == missing, "no site was said missing twice"
    assert len([o for o in rt.db.orders(ca="b") if o.outcome == "issued"]) == 30
    clock.set(T0 + timedelta(minutes=200))
    rt.engine.tick()
    assert b.calls == 30, "every site has its standby"


def test_sites_with_nothing_healthy_get_the_room_first(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    urgent = ("z1", "z2", "z3")  # last in the config
    rt, roots = fleet(tmp_path, clock, sites=8, cap=4, urgent=urgent)
    b = SignsCSRs("b", roots["b"])
    c = SignsCSRs("c", roots["c"], fail=True)  # and c is down
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b, "c": lambda site: c}
    rev = scripted(rt)
    rev.status["c"] = "revoked"  # the urgent sites' active certificates are revoked
    rt.engine.tick()
    assert b.calls == 4
    got = {o.site for o in rt.db.orders(ca="b")}
    assert set(urgent) <= got, got
    assert len(got - set(urgent)) == 1


def test_shared_table_counts_other_controllers_orders(tmp_path: Path) -> None:
    """Two engines on one store (a fleet's shared orders table): the second sees the first's
    orders of the hour and sends none beyond the cap."""
    clock = FakeClock(T0)
    rt, roots = fleet(tmp_path, clock, sites=12, cap=5)
    b = SignsCSRs("b", roots["b"])
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b}
    scripted(rt)
    other = build(rt.config, clock=clock)
    other.engine.issuers = {**other.engine.issuers, "b": lambda site: b}
    scripted(other)
    rt.engine.tick()
    assert b.calls == 5
    other.engine.tick()
    assert b.calls == 5
    assert "issuance_failed" not in [e.kind for e in rt.db.events()]


def test_queued_orders_count_before_they_start(tmp_path: Path) -> None:
    """With background workers an order is in the table only once its worker starts it (one
    at a time per CA): the queued ones count too, in the tick and in the next ones."""
    clock = FakeClock(T0)
    rt, roots = fleet(tmp_path, clock, sites=12, cap=5, daemon={"issue_timeout": 60})
    hang = threading.Event()
    b = SignsCSRs("b", roots["b"], hang=hang)
    rt.engine.issuers = {**rt.engine.issuers, "b": lambda site: b}
    scripted(rt)
    done: list[Any] = []
    workers = rt.engine.start_workers(done.append)
    try:
        rt.engine.tick()
        assert len(workers.busy()) == 5
        for minutes in (1, 2):
            clock.set(T0 + timedelta(minutes=minutes))
            rt.engine.tick()
            assert len(workers.busy()) == 5, "queued orders count against the CA's rate"
        hang.set()
        assert workers.wait_idle(30)
        rt.engine.tick()
        assert workers.wait_idle(30)
    finally:
        hang.set()
        workers.close()
    assert b.calls == 5 and len(rt.db.orders(ca="b")) == 5
    assert all(o.ok for o in done)
