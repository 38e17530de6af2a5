"""deploy's batch journal: one file per activate() batch, rewritten for a rollback, removed at
the end; recover() reads it and the per-site journals of older versions. The server is
scripted: it serves what the live links pointed at when it last applied (a reload)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import deploy, keys
from certfailover.errors import StoreError
from certfailover.probe import leaf_sha256
from certfailover.servers.base import Endpoint, LiveChange
from certfailover.store import files as files_mod
from certfailover.store import vault as vault_mod
from certfailover.store.vault import Vault, load_pem_certs
from certfailover.testing import pki

EP = Endpoint("127.0.0.1", 1)


class Server:
    """A reloading server: serves, per site, the leaf of the live link as of its last apply."""

    name = "web"

    def __init__(self, vault: Vault, sites: Sequence[str]) -> None:
        self.vault = vault
        self.served: dict[str, x509.Certificate] = {}
        self.applies = 0
        self.load(sites)

    def load(self, sites: Sequence[str]) -> None:
        for site in sites:
            live = self.vault.live_target(site)
            assert live is not None
            self.served[site] = load_pem_certs((live / "cert.pem").read_bytes(), "x")[0]

    def apply(self, changes: Sequence[LiveChange]) -> None:
        self.applies += 1
        self.load([c.site for c in changes])

    def __call__(self, ep: Endpoint, sni: str, *, timeout: float = 5.0,
                 key_type: str | None = None) -> list[x509.Certificate]:
        return [self.served[sni.split(".")[0]]]


def setup(tmp_path: Path, n: int) -> tuple[Vault, list[deploy.Activation], dict[str, Path]]:
    """n sites, live -> certificate a; activations to certificate b. Returns the a dirs too."""
    root = pki.make_root("R")
    vault = Vault(tmp_path / "store")
    vault.ensure()
    acts, olds = [], {}
    for i in range(n):
        site = f"s{i}"
        for ca in ("a", "b"):
            leaf, key = pki.make_leaf(root, [f"{site}.test"])
            path = vault.save(site, ca, format(leaf.serial_number, "x"),
                              leaf_pem=leaf.public_bytes(Encoding.PEM), chain_pem=b"",
                              key_pem=keys.key_pem(key))
            if ca == "a":
                vault.point_live(site, path)
                olds[site] = path
            else:
                acts.append(deploy.Activation(site, path, leaf_sha256(leaf), (EP,),
                                              f"{site}.test"))
    return vault, acts, olds


def journals(vault: Vault) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in deploy.pending_journals(vault)]


def ok(chain: list[x509.Certificate], sni: str) -> str | None:
    return None


def test_one_journal_per_batch_before_the_flip_and_none_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, olds = setup(tmp_path, 5)
    server = Server(vault, [a.site for a in acts])
    monkeypatch.setattr(deploy, "served_chain", server)
    seen: dict[str, list[dict[str, Any]]] = {}

    def on_phase(name: str) -> None:
        seen[name] = journals(vault)
    results = deploy.activate(vault, server, acts, validate=ok, settle=0.01, on_phase=on_phase)
    assert all(r.ok for r in results)
    [doc] = seen["flip"]  # ONE file, written before anything changed
    assert [e["site"] for e in doc["entries"]] == [a.site for a in acts]
    assert {e["phase"] for e in doc["entries"]} == {"activate"}
    assert [e["previous"] for e in doc["entries"]] == [str(olds[a.site]) for a in acts]
    assert deploy.pending_journals(vault) == []
    assert list(deploy.journal_dir(vault).iterdir()) == []  # no temp file left either


def test_the_rollback_rewrites_the_journal_with_the_rolled_back_sites_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, olds = setup(tmp_path, 4)
    server = Server(vault, [a.site for a in acts])
    monkeypatch.setattr(deploy, "served_chain", server)
    seen: dict[str, list[dict[str, Any]]] = {}

    def reject_s1(chain: list[x509.Certificate], sni: str) -> str | None:
        return "untrusted" if sni == "s1.test" else None
    results = deploy.activate(vault, server, acts, validate=reject_s1, settle=0.01,
                              on_phase=lambda p: seen.setdefault(p, journals(vault)))
    assert [r.ok for r in results] == [True, False, True, True]
    [doc] = seen["rollback-flip"]
    assert [(e["site"], e["phase"]) for e in doc["entries"]] == [("s1", "rollback")]
    assert deploy.pending_journals(vault) == [] and vault.live_target("s1") == olds["s1"]


def test_directory_fsyncs_do_not_grow_with_the_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = []
    real = files_mod.fsync_dir
    for n, sub in ((3, "small"), (30, "large")):
        vault, acts, _ = setup(tmp_path / sub, n)
        server = Server(vault, [a.site for a in acts])
        monkeypatch.setattr(deploy, "served_chain", server)
        calls: list[Path] = []

        def counting(path: Path, calls: list[Path] = calls) -> None:
            calls.append(Path(path))
            real(path)
        for mod in (files_mod, vault_mod, deploy):
            monkeypatch.setattr(mod, "fsync_dir", counting)
        assert all(r.ok for r in deploy.activate(vault, server, acts, validate=ok, settle=0.01))
        for mod in (files_mod, vault_mod, deploy):
            monkeypatch.setattr(mod, "fsync_dir", real)
        counts.append(len(calls))
        # journal written (1), live/ after the flip (1), journal removed (1)
        assert calls.count(vault.root / "live") == 1
    assert counts[0] == counts[1] == 3, counts


@pytest.mark.parametrize("text", ['{"version": 2, "seq": 1, "entries": [{"site": "s0"', "garbage",
                                  '{"version": 2, "seq": 1, "entries": [{"site": "s0"}]}', "[]",
                                  ""])
def test_a_torn_or_garbage_journal_is_a_store_error_naming_the_file(
        tmp_path: Path, text: str) -> None:
    vault, _, olds = setup(tmp_path, 1)
    path = deploy.journal_dir(vault) / "_batch-1-x.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(StoreError, match=str(path)):
        deploy.recover(vault, {"web": Server(vault, ["s0"])}, validate=ok, settle=0.01)
    assert path.exists() and vault.live_target("s0") == olds["s0"]  # nothing changed


def _old_journal(vault: Vault, act: deploy.Activation, previous: Path, phase: str) -> Path:
    """What the per-site journal of the previous version looked like."""
    path = deploy.journal_dir(vault) / f"{act.site}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": 1, "site": act.site, "server": "web", "phase": phase,
        "previous": str(previous), "target": str(act.target),
        "expected_sha256": act.expected_sha256, "sni": act.sni, "key_type": None,
        "endpoints": [str(e) for e in act.endpoints]}))
    return path


def test_old_per_site_journals_are_still_recovered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """s0: killed after the reload (the new leaf is served): finished. s1: killed after the
    flip, before the reload: undone. s2: killed in its rollback: undone."""
    vault, acts, olds = setup(tmp_path, 3)
    server = Server(vault, [a.site for a in acts])
    monkeypatch.setattr(deploy, "served_chain", server)
    for a, phase in zip(acts, ("activate", "activate", "rollback"), strict=True):
        _old_journal(vault, a, olds[a.site], phase)
        vault.point_live(a.site, a.target)
    server.load(["s0", "s2"])  # s0 and s2 were reloaded, s1 not
    results = {r.site: r for r in deploy.recover(vault, {"web": server}, validate=ok,
                                                 settle=0.01)}
    assert results["s0"].action == "finished" and vault.live_target("s0") == acts[0].target
    assert results["s1"].action == "undone" and vault.live_target("s1") == olds["s1"]
    assert results["s2"].action == "undone" and vault.live_target("s2") == olds["s2"]
    assert deploy.pending_journals(vault) == []
    assert leaf_sha256(server.served["s2"]) != acts[2].expected_sha256  # applied back


def test_a_batch_killed_after_the_flip_is_undone_and_its_journal_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, olds = setup(tmp_path, 3)
    server = Server(vault, [a.site for a in acts])
    monkeypatch.setattr(deploy, "served_chain", server)

    class Killed(Exception):
        pass

    def die(phase: str) -> None:
        if phase == "apply":
            raise Killed
    with pytest.raises(Killed):
        deploy.activate(vault, server, acts, validate=ok, settle=0.01, on_phase=die)
    assert len(deploy.pending_journals(vault)) == 1
    assert all(vault.live_target(a.site) == a.target for a in acts)
    results = deploy.recover(vault, {"web": server}, validate=ok, settle=0.01)
    assert {r.action for r in results} == {"undone"} and server.applies == 1
    assert all(vault.live_target(a.site) == olds[a.site] for a in acts)
    assert deploy.pending_journals(vault) == []


def test_recovery_keeps_only_the_entries_it_could_not_settle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry of a server that is not configured stays journaled (for the operator); the
    other sites of the same batch file are settled and leave it."""
    vault, acts, olds = setup(tmp_path, 2)
    server = Server(vault, [a.site for a in acts])
    monkeypatch.setattr(deploy, "served_chain", server)
    path = deploy.journal_dir(vault) / "_batch-5-x.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 2, "seq": 5, "entries": [
        deploy._entry_json(deploy._Entry(acts[0], "web", "activate", olds["s0"])),
        deploy._entry_json(deploy._Entry(acts[1], "gone", "activate", olds["s1"])),
    ]}))
    results = {r.site: r for r in deploy.recover(vault, {"web": server}, validate=ok,
                                                 settle=0.01)}
    assert results["s0"].action == "undone"
    assert results["s1"].action == "failed" and "'gone'" in results["s1"].message
    assert deploy.pending_journals(vault) == [path]
    assert [e["site"] for e in json.loads(path.read_text())["entries"]] == ["s1"]


def test_a_new_batch_supersedes_an_older_journal_of_its_sites(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the per-site file used to be overwritten: the older entry must not be acted on after
    the new batch finished."""
    vault, acts, olds = setup(tmp_path, 2)
    server = Server(vault, [a.site for a in acts])
    monkeypatch.setattr(deploy, "served_chain", server)
    _old_journal(vault, acts[0], olds["s0"], "activate")
    _old_journal(vault, acts[1], olds["s1"], "activate")
    results = deploy.activate(vault, server, acts[:1], validate=ok, settle=0.01)
    assert results[0].ok
    assert [p.name for p in deploy.pending_journals(vault)] == ["s1.json"]


def test_the_newest_journal_of_a_site_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old per-site journal and a batch journal both name s0 (a crash before the batch
    could supersede it): the batch entry, the newer, decides."""
    vault, acts, olds = setup(tmp_path, 1)
    server = Server(vault, ["s0"])
    monkeypatch.setattr(deploy, "served_chain", server)
    # the older journal would undo to b -> a; the newer one says: previous a, target b, done
    _old_journal(vault, deploy.Activation("s0", olds["s0"], "0" * 64, (EP,), "s0.test"),
                 acts[0].target, "rollback")
    batch = deploy.journal_dir(vault) / "_batch-9-x.json"
    batch.write_text(json.dumps({"version": 2, "seq": 9, "entries": [
        deploy._entry_json(deploy._Entry(acts[0], "web", "activate", olds["s0"]))]}))
    vault.point_live("s0", acts[0].target)
    server.load(["s0"])
    [r] = deploy.recover(vault, {"web": server}, validate=ok, settle=0.01)
    assert r.action == "finished" and vault.live_target("s0") == acts[0].target
    assert deploy.pending_journals(vault) == []


def test_an_entry_of_the_wrong_type_is_a_store_error_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, olds = setup(tmp_path, 1)
    entry = deploy._entry_json(deploy._Entry(acts[0], "web", "activate", olds["s0"]))
    path = deploy.journal_dir(vault) / "_batch-1-x.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 2, "seq": 1, "entries": [{**entry, "site": 7}]}))
    with pytest.raises(StoreError, match=str(path)):
        deploy.recover(vault, {"web": Server(vault, ["s0"])}, validate=ok, settle=0.01)


def test_a_new_batch_is_newer_than_any_journal_left_even_if_the_clock_went_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vault, acts, olds = setup(tmp_path, 2)
    server = Server(vault, [a.site for a in acts])
    monkeypatch.setattr(deploy, "served_chain", server)
    future = 4 * 10**19  # a journal written when the clock was far ahead
    left = deploy.journal_dir(vault) / f"_batch-{future}-x.json"
    left.parent.mkdir(parents=True)
    left.write_text(json.dumps({"version": 2, "seq": future, "entries": [
        deploy._entry_json(deploy._Entry(acts[1], "gone", "activate", olds["s1"]))]}))
    seqs: list[int] = []

    def on_phase(name: str) -> None:
        if name == "flip":
            seqs.extend(d["seq"] for d in journals(vault))
    [r] = deploy.activate(vault, server, acts[:1], validate=ok, settle=0.01, on_phase=on_phase)
    assert r.ok and sorted(seqs) == [future, future + 1]
    assert deploy.pending_journals(vault) == [left]
