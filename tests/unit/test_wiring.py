from __future__ import annotations

from pathlib import Path

from certfailover import config
from certfailover.health import BundleStores, StoreTrustCheck
from certfailover.model import utcnow
from certfailover.testing import pki
from certfailover.trust.check import ProgramTrustCheck
from certfailover.wiring import ChainValidator, build_checks


def _validator(tmp_path: Path, trust: list[str]) -> ChainValidator:
    raw = {"store": {"directory": str(tmp_path / "store")},
           "ca": [{"name": "a", "directory": "https://a.test/dir"},
                  {"name": "b", "directory": "https://b.test/dir"}],
           "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                     "trust": trust}]}
    cfg = config.parse(raw, file="t.toml", base=tmp_path, env={})
    return ChainValidator(cfg.sites, StoreTrustCheck(BundleStores()),
                          ProgramTrustCheck(path=cfg.trust.snapshot), utcnow)


def test_served_chain_must_validate_in_bundles_and_programs(tmp_path: Path) -> None:
    root = pki.make_root("Lab Root")
    inter = pki.make_intermediate(root, "Lab Int")
    leaf, _ = pki.make_leaf(inter, ["www.example.test"])
    bundle = pki.write_bundle(tmp_path / "roots.pem", root)
    assert _validator(tmp_path, [str(bundle)])([leaf, inter.cert], "www.example.test") is None
    other = pki.write_bundle(tmp_path / "other.pem", pki.make_root("Other Root"))
    err = _validator(tmp_path, [str(other)])([leaf, inter.cert], "www.example.test")
    assert err is not None and "other.pem" in err
    # a lab root is in no real root program: the program verdict names the program and reason
    err = _validator(tmp_path, [str(bundle), "mozilla"])([leaf, inter.cert], "www.example.test")
    assert err is not None and err.startswith("mozilla: not trusted")


def test_the_validator_judges_with_the_checks_the_engine_runs(tmp_path: Path) -> None:
    """One chain and one program check in build_checks; the deployer's validator holds those
    very objects (their bundle cache and snapshot), not copies of their logic."""
    from certfailover.wiring import build
    raw = {"store": {"directory": str(tmp_path / "store")},
           "ca": [{"name": "a", "directory": "https://a.test/dir"},
                  {"name": "b", "directory": "https://b.test/dir"}],
           "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"]}]}
    cfg = config.parse(raw, file="t.toml", base=tmp_path, env={})
    rt = build(cfg)
    try:
        validate = rt.deployer.validate
        assert isinstance(validate, ChainValidator)
        checks = rt.engine.checks
        assert [c for c in checks if isinstance(c, StoreTrustCheck)] == [validate.chain]
        assert [c for c in checks if isinstance(c, ProgramTrustCheck)] == [validate.trust]
        assert len(build_checks(cfg, BundleStores())) == len(checks)
    finally:
        rt.db.engine.dispose()
