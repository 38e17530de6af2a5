"""Several chains per certificate: the vault keeps them, ChainJudge judges each one against the
site's trust anchors, policy.choose_chain picks the one to serve (docs/chains.md)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certfailover import keys
from certfailover.chains import ChainJudge, describe
from certfailover.health import BundleStores
from certfailover.model import PathVerdict
from certfailover.policy import choose_chain
from certfailover.sitetrust import PemBundle, Program
from certfailover.store.vault import Vault, base_dir, chain_dir, chain_dirs, chain_index
from certfailover.testing import pki
from certfailover.trust.evaluate import TrustEngine
from certfailover.trust.programs import Provenance, RootEntry, RootProgram
from certfailover.trust.snapshot import Snapshot

DOMAIN = "www.example.test"
NOW = datetime.now(UTC)


class Cross:
    """One issuing CA with two chains: signed by `old` root (chain 0) and cross-signed by
    `new` root (chain 1: the same subject and key)."""

    def __init__(self, *, cross_days: int = 1825, cross_start: datetime | None = None) -> None:
        self.old = pki.make_root("Old Root")
        self.new = pki.make_root("New Root")
        self.inter = pki.make_intermediate(self.old, "Issuing CA")
        self.cross = pki.make_intermediate(self.new, "Issuing CA", key=self.inter.key,
                                           days=cross_days, not_before=cross_start)
        self.leaf, self.key = pki.make_leaf(self.inter, [DOMAIN])
        self.chains = ((self.inter.cert,), (self.cross.cert,))


def bundle(path: Path, *roots: pki.Authority) -> PemBundle:
    pki.write_bundle(path, *roots)
    return PemBundle(path)


# -- vault --------------------------------------------------------------------------------


def test_vault_keeps_every_chain_whole_with_the_key_private(tmp_path: Path) -> None:
    x = Cross()
    vault = Vault(tmp_path / "store")
    vault.ensure()
    d = vault.save("www", "a", "01", leaf_pem=pki.pem(x.leaf), chain_pem=pki.pem(x.inter.cert),
                   key_pem=keys.key_pem(x.key), alt_chains_pem=(pki.pem(x.cross.cert),))
    assert chain_dirs(d) == [d, d / "chains" / "1"]
    one = chain_dir(d, 1)
    assert (one / "fullchain.pem").read_bytes() == pki.pem(x.leaf, x.cross.cert)
    assert (one / "privkey.pem").read_bytes() == (d / "privkey.pem").read_bytes()
    assert stat.S_IMODE(os.stat(one / "privkey.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(one / "combined.pem").st_mode) == 0o600
    m = vault.load(d)
    assert m.chains == x.chains and m.chain == (x.inter.cert,)
    assert m.intermediates == (x.inter.cert, x.cross.cert)
    assert vault.load(one).chain == (x.cross.cert,), "a chain directory serves its own chain"
    assert base_dir(one) == d and chain_index(d, one) == 1 and chain_index(d, d) == 0
    vault.point_live("www", one)
    assert chain_index(d, vault.live_target("www")) == 1
    other = vault.save("www", "b", "02", leaf_pem=pki.pem(x.leaf), chain_pem=b"",
                       key_pem=keys.key_pem(x.key))
    assert chain_index(other, vault.live_target("www")) is None
    assert chain_dirs(other) == [other]
    assert not list(d.parent.glob(".*.tmp")), "no temporary directory is left"


def test_add_chain_appends_the_next_index(tmp_path: Path) -> None:
    x = Cross()
    vault = Vault(tmp_path / "store")
    vault.ensure()
    d = vault.save("www", "a", "01", leaf_pem=pki.pem(x.leaf), chain_pem=pki.pem(x.inter.cert),
                   key_pem=keys.key_pem(x.key))
    assert vault.add_chain(d, pki.pem(x.cross.cert)) == d / "chains" / "1"
    assert vault.load(d).chains == x.chains
    assert not list((d / "chains").glob(".*")), "written under a temporary name, renamed"


# -- judging each chain against PEM bundles -----------------------------------------------


def test_a_root_removed_from_the_bundle_fails_only_its_chain(tmp_path: Path) -> None:
    x = Cross()
    judge = ChainJudge(BundleStores(), None)
    both = bundle(tmp_path / "both.pem", x.old, x.new)
    paths = judge.judge(x.leaf, x.chains, [both], DOMAIN, NOW)
    assert [p.ok for p in paths] == [True, True]
    assert [p.roots[0] for p in paths] == [x.old.cert, x.new.cert]
    assert choose_chain(paths, 0).index == 0, "the served chain is kept while it works"

    only_new = bundle(tmp_path / "new.pem", x.new)
    paths = judge.judge(x.leaf, x.chains, [only_new], DOMAIN, NOW)
    assert [p.ok for p in paths] == [False, True]
    assert str(only_new) in paths[0].failed[0]
    choice = choose_chain(paths, 0)
    assert choice.index == 1 and "chain 0 fails" in choice.reason

    nothing = bundle(tmp_path / "none.pem", pki.make_root("Unrelated"))
    choice = choose_chain(judge.judge(x.leaf, x.chains, [nothing], DOMAIN, NOW), 1)
    assert choice.index is None and "no chain satisfies" in choice.reason


def test_an_expired_cross_sign_fails_its_path_and_is_forecast_before(tmp_path: Path) -> None:
    x = Cross(cross_days=10, cross_start=NOW - timedelta(days=5))
    judge = ChainJudge(BundleStores(), None)
    both = bundle(tmp_path / "both.pem", x.old, x.new)
    now = judge.judge(x.leaf, x.chains, [both], DOMAIN, NOW)
    assert now[1].ok and now[1].until == x.cross.cert.not_valid_after_utc
    assert "expires" in now[1].until_why and now[0].until is None
    assert "until" in describe(now[1])
    later = judge.judge(x.leaf, x.chains, [both], DOMAIN, NOW + timedelta(days=6))
    assert [p.ok for p in later] == [True, False]
    # served on the cross-signed path: it expired, switch to the other one
    assert choose_chain(later, 1).index == 0


# -- judging each chain against a root program ---------------------------------------------


def program(*entries: tuple[pki.Authority, RootEntry]) -> TrustEngine:
    roots = {a.sha256: e for a, e in entries}
    prog = RootProgram("mozilla", Provenance("test", "0"), roots)
    return TrustEngine(Snapshot(NOW, {"mozilla": prog}, {a.sha256: a.der for a, _ in entries}))


def test_a_distrust_after_on_one_root_moves_the_served_chain() -> None:
    x = Cross()
    cut = x.leaf.not_valid_before_utc - timedelta(days=1)
    eng = program((x.old, RootEntry(x.old.sha256, "Old Root", distrust_after=cut)),
                  (x.new, RootEntry(x.new.sha256, "New Root")))
    judge = ChainJudge(BundleStores(), lambda: eng)
    paths = judge.judge(x.leaf, x.chains, [Program("mozilla")], DOMAIN, NOW)
    assert not paths[0].ok and "distrust_after" in paths[0].failed[0]
    assert paths[1].ok and paths[1].root_sha256 == (x.new.sha256,)
    assert choose_chain(paths, 0).index == 1


def test_a_removal_date_is_each_paths_forecast() -> None:
    x = Cross()
    gone = NOW + timedelta(days=30)
    eng = program((x.old, RootEntry(x.old.sha256, "Old Root", removed_at=gone)),
                  (x.new, RootEntry(x.new.sha256, "New Root")))
    paths = ChainJudge(BundleStores(), lambda: eng).judge(
        x.leaf, x.chains, [Program("mozilla")], DOMAIN, NOW)
    assert paths[0].ok and paths[0].until == gone and "mozilla" in paths[0].until_why
    assert paths[1].ok and paths[1].until is None


# -- the choice itself (pure) --------------------------------------------------------------


def verdict(index: int, length: int, *, ok: bool = True,
            until: datetime | None = None) -> PathVerdict:
    return PathVerdict(index, length, f"CN=Root {index}", () if ok else ("x: no",), until)


@pytest.mark.parametrize(("paths", "served", "want"), [
    ([verdict(0, 2), verdict(1, 1)], None, 1),  # not served yet: the shortest
    ([verdict(0, 2), verdict(1, 1)], 0, 0),  # served and still fine: kept (no churn)
    ([verdict(0, 1, ok=False), verdict(1, 2), verdict(2, 1)], 0, 2),  # shortest good one
    ([verdict(0, 1, until=NOW), verdict(1, 1, until=NOW + timedelta(days=9))], None, 1),
    ([verdict(0, 1, ok=False)], 0, None),
])
def test_choose_chain(paths: list[PathVerdict], served: int | None, want: int | None) -> None:
    assert choose_chain(paths, served).index == want

