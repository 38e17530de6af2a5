from __future__ import annotations

from pathlib import Path

from certfailover import config
from certfailover.health import BundleStores
from certfailover.model import utcnow
from certfailover.store.vault import Vault
from certfailover.testing import pki
from certfailover.wiring import ServerDeployer


def _deployer(tmp_path: Path, trust: list[str]) -> ServerDeployer:
    raw = {"store": {"directory": str(tmp_path / "store")},
           "ca": [{"name": "a", "directory": "https://a.test/dir"},
                  {"name": "b", "directory": "https://b.test/dir"}],
           "site": [{"name": "www", "domains": ["www.example.test"], "cas": ["a", "b"],
                     "trust": trust}]}
    cfg = config.parse(raw, file="t.toml", base=tmp_path, env={})
    return ServerDeployer(cfg, Vault(tmp_path / "store"), BundleStores(), utcnow)


def test_served_chain_must_validate_in_bundles_and_programs(tmp_path: Path) -> None:
    root = pki.make_root("Lab Root")
    inter = pki.make_intermediate(root, "Lab Int")
    leaf, _ = pki.make_leaf(inter, ["www.example.test"])
    bundle = pki.write_bundle(tmp_path / "roots.pem", root)
    assert _deployer(tmp_path, [str(bundle)]).validate([leaf, inter.cert], "www.example.test") is None
    other = pki.write_bundle(tmp_path / "other.pem", pki.make_root("Other Root"))
    err = _deployer(tmp_path, [str(other)]).validate([leaf, inter.cert], "www.example.test")
    assert err is not None and "other.pem" in err
    # a lab root is in no real root program: the program verdict names the program and reason
    err = _deployer(tmp_path, [str(bundle), "mozilla"]).validate([leaf, inter.cert],
                                                                   "www.example.test")
    assert err is not None and err.startswith("mozilla: not trusted")
