"""The daemon refreshes root-program data on a schedule from upstream files (`[trust]`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from certfailover import config as config_mod
from certfailover.config import TrustSettings, parse
from certfailover.errors import ConfigError
from certfailover.testing import FakeClock
from certfailover.trust.snapshot import read_snapshot
from certfailover.wiring import build, build_daemon


def trust_table(table: dict[str, object], base: Path) -> TrustSettings:
    """The `[trust]` table as config.load parses it."""
    return parse({"trust": table}, file="t.toml", base=base, env={}).trust

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "trust"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared trust data absent")


def _cfg(tmp_path: Path, trust: dict[str, Any]) -> config_mod.Config:
    raw = {"store": {"directory": str(tmp_path / "store")}, "trust": trust}
    return config_mod.parse(raw, file="t.toml", base=tmp_path, env={})


@needs_shared
def test_scheduled_refresh_rebuilds_the_snapshot_and_keeps_it_on_failure(tmp_path: Path) -> None:
    source = tmp_path / "certdata.txt"
    source.write_bytes((SHARED / "mozilla" / "certdata-2024-11-15.txt").read_bytes())
    cfg = _cfg(tmp_path, {"sources": [f"mozilla={source}@@nss-2024-11-15"], "refresh": "6h"})
    clock = FakeClock(datetime(2026, 11, 1, tzinfo=UTC))
    rt = build(cfg, clock=clock)
    daemon = build_daemon(rt.engine, cfg, interval=1, clock=clock)
    try:
        daemon.tick()
        out = tmp_path / "store" / "trust-snapshot.json.gz"
        snap = read_snapshot(out)
        assert snap.programs["mozilla"].trusted_count() == 152
        assert snap.programs["mozilla"].provenance.version == "nss-2024-11-15"
        assert "chrome" in snap.programs, "programs without a source are carried over"
        kinds = [e.kind for e in rt.db.events()]
        assert kinds == ["trust_updated"]
        daemon.tick()  # not due again before 6 h
        assert [e.kind for e in rt.db.events()] == ["trust_updated"]
        source.write_text("garbage that is not certdata\n")
        clock.now += timedelta(hours=7)
        daemon.tick()
        failed = rt.db.events()[-1]
        assert failed.kind == "trust_update_failed" and "keeping the current data" in failed.message
        assert read_snapshot(out).programs["mozilla"].trusted_count() == 152
    finally:
        daemon.close()


def test_trust_table_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[trust\]\.sources"):
        trust_table({"sources": ["mozilla"]}, tmp_path)
    with pytest.raises(ConfigError, match=r"\[trust\]\.refresh"):
        trust_table({"refresh": "soon"}, tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):
        trust_table({"sauces": []}, tmp_path)
    off = trust_table({}, tmp_path)
    assert off.snapshot is None and off.sources == ()


def test_a_root_program_dropping_the_active_root_fails_the_site_over(tmp_path: Path) -> None:
    """Root-program data refreshed by the daemon: the program drops CA a's root, the site that
    requires that program fails over to CA b at the same tick."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from certfailover import keys
    from certfailover.model import CertState
    from certfailover.schedule import Scheduler
    from certfailover.testing import pki

    roots = {ca: pki.make_root(f"Program Root {ca}") for ca in ("a", "b")}
    program_file = pki.write_bundle(tmp_path / "apple-roots.pem", *roots.values())
    raw = {"store": {"directory": str(tmp_path / "store")},
           "daemon": {"issue_timeout": 0.5},
           # a 2-root test program replaces the packaged apple (156 roots), then drops to 1:
           # both are more than 10% fewer roots, which the operator confirms with allow_shrink
           "trust": {"sources": [f"apple={program_file}"], "refresh": "1h", "allow_shrink": True},
           "ca": [{"name": ca, "directory": f"https://127.0.0.1:1/{ca}"} for ca in roots],
           "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                     "trust": ["apple"]}]}
    cfg = config_mod.parse(raw, file="t.toml", base=tmp_path, env={})
    clock = FakeClock(datetime(2026, 11, 1, tzinfo=UTC))
    clock.now = datetime.now(UTC)
    rt = build(cfg, clock=clock)
    for ca, root in roots.items():
        leaf, key = pki.make_leaf(root, ["www.example.test"], not_before=clock.now - timedelta(hours=1))
        rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=leaf.public_bytes(Encoding.PEM),
                             chain_pem=b"", key_pem=keys.key_pem(key), source=ca)
    daemon = build_daemon(rt.engine, cfg, interval=1, clock=clock)
    daemon.scheduler = Scheduler(rng=__import__("random").Random(1))
    try:
        daemon.tick()
        active = next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE)
        assert active.ca == "a"
        pki.write_bundle(program_file, roots["b"])  # upstream removes root a from the program
        clock.now += timedelta(hours=2)  # the refresh is due
        report = daemon.tick()
        kinds = [e.kind for e in rt.db.events()]
        assert "trust_updated" in kinds
        fo = next(e for e in report.events if e.kind == "failover")
        assert "not trusted by apple" in fo.message
        assert next(c for c in rt.db.certs("www") if c.state is CertState.ACTIVE).ca == "b"
    finally:
        daemon.close()
