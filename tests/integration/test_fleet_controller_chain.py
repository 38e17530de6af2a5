"""A fleet controller's engine switches the CHAIN of an active certificate (docs/chains.md)
when the served one stops being trusted: it judges what the agents were told to serve
(`fleet_desired`: certificate and chain digest), having no live link of its own, and publishes
the other chain (real PostgreSQL; no agent, so the publish is the whole switch)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from certfailover import config as config_mod
from certfailover import keys
from certfailover.fleet.sealed import chain_digest
from certfailover.model import CertState
from certfailover.testing import pki
from certfailover.wiring import build
from certfailover_lab.postgres import PostgresServer

pytestmark = pytest.mark.integration
DOMAIN = "www.example.test"


def test_the_controller_publishes_a_chain_switch(postgres: PostgresServer,
                                                 tmp_path: Path) -> None:
    url = postgres.create_database("fleet_controller_chain")
    roots = {n: pki.make_root(f"Root {n}") for n in ("a", "a-new", "b")}
    inter_a = pki.make_intermediate(roots["a"], "Issuing CA a")
    cross_a = pki.make_intermediate(roots["a-new"], "Issuing CA a", key=inter_a.key)
    bundle = pki.write_bundle(tmp_path / "roots.pem", *roots.values())
    raw: dict[str, Any] = {
        "store": {"directory": str(tmp_path / "controller"), "database": url},
        "daemon": {"issue_timeout": 1},
        "fleet": {"role": "controller", "kek": "env:KEK", "converge_timeout": "5s"},
        "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}"} for ca in ("a", "b")],
        "site": [{"name": "www", "domains": [DOMAIN], "cas": ["a", "b"],
                  "trust": [str(bundle)]}],
    }
    cfg = config_mod.parse(raw, file="t.toml", base=tmp_path, env={"KEK": os.urandom(32).hex()})
    rt = build(cfg)
    site = rt.config.site("www")
    before = datetime.now(UTC) - timedelta(hours=1)
    leaf, key = pki.make_leaf(inter_a, [DOMAIN], not_before=before)
    rt.engine.store_cert(site, "a", leaf_pem=pki.pem(leaf), chain_pem=pki.pem(inter_a.cert),
                         key_pem=keys.key_pem(key), source="test a",
                         alt_chains_pem=(pki.pem(cross_a.cert),))
    leaf_b, key_b = pki.make_leaf(roots["b"], [DOMAIN], not_before=before)
    rt.engine.store_cert(site, "b", leaf_pem=pki.pem(leaf_b), chain_pem=b"",
                         key_pem=keys.key_pem(key_b), source="test b")
    rt.db.distrust("b", datetime.now(UTC), "test: keep a active")
    rt.engine.tick()

    def desired() -> tuple[str, str | None]:
        with rt.db.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT cert_id, chain FROM fleet_desired"
                                       " WHERE site = 'www'")).one()
        return str(row.cert_id), row.chain

    active = next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE)
    assert active.ca == "a"
    assert desired() == (active.id, chain_digest(pki.pem(inter_a.cert)))

    # root "a" leaves the site's trust: chain 0 is no longer trusted, chain 1 (cross) is
    pki.write_bundle(bundle.with_suffix(".new"), roots["a-new"], roots["b"]).replace(bundle)
    report = rt.engine.tick()
    kinds = [e.kind for e in report.events]
    assert "chain_switch" in kinds, report.events
    assert "failover" not in kinds
    assert desired() == (active.id, chain_digest(pki.pem(cross_a.cert)))
    assert next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE).id == active.id
