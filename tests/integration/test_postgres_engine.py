"""The engine on a PostgreSQL store (the fleet setup): activation, operator distrust, failover,
and a second engine process sharing the same database sees the same state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from certfailover import config as config_mod
from certfailover import keys
from certfailover.model import CertState
from certfailover.wiring import build
from certfailover_lab import pki
from certfailover_lab.postgres import PostgresServer

pytestmark = pytest.mark.integration
PEM = serialization.Encoding.PEM


def test_engine_on_postgresql(tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.create_database("engine_test")
    roots = {ca: pki.make_root(f"Root {ca}") for ca in ("a", "b")}
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots.values())
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "store"), "database": url},
        "daemon": {"issue_timeout": 1},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}"} for ca in roots],
        "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                  "trust": [str(bundle)]}],
    }
    cfg = config_mod.parse(raw, file="t.toml", base=tmp_path, env={})
    assert cfg.database == url
    rt = build(cfg)
    for ca, root in roots.items():
        leaf, key = pki.make_leaf(root, ["www.example.test"],
                                  not_before=datetime.now(UTC) - timedelta(hours=1))
        rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=leaf.public_bytes(PEM),
                             chain_pem=b"", key_pem=keys.key_pem(key), source=f"test {ca}")
    report = rt.engine.tick()
    assert "activated" in [e.kind for e in report.events]
    active = next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE)
    assert active.ca == "a" and rt.vault.live_target("www") == Path(active.path).resolve()

    rt.db.distrust("a", datetime.now(UTC), "in the news")
    report = rt.engine.tick()
    assert "failover" in [e.kind for e in report.events]
    other = build(config_mod.parse(raw, file="t.toml", base=tmp_path, env={}))  # a second process
    active = next(c for c in other.db.certs("www") if c.state is CertState.ACTIVE)
    assert active.ca == "b"
    assert [e.kind for e in other.db.events(site="www")].count("failover") == 1
    assert other.db.distrusted() == {"a": "in the news"}
