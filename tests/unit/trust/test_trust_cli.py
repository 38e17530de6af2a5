"""``certfailover trust verify | diff | update`` through the real CLI entry point."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from trustpki import Lab, make_intermediate, make_leaf, pem

from certfailover.cli.main import main
from certfailover.trust.snapshot import read_snapshot, save_snapshot

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "trust"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared trust data absent")


@pytest.fixture
def lab_files(lab: Lab, tmp_path: Path) -> tuple[Path, Path]:
    snap = tmp_path / "lab.json.gz"
    save_snapshot(lab.snap, snap)
    ica = make_intermediate(lab.entrust, "CLI CA")
    leaf = make_leaf(ica, ["www.example.test"], not_before=datetime(2024, 11, 20, tzinfo=UTC),
                     scts=[datetime(2024, 11, 20, tzinfo=UTC)])
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pem(leaf, ica.cert))
    return snap, chain


def test_verify_before_and_after_the_chrome_cutoff(lab_files: tuple[Path, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    snap, chain = lab_files
    base = ["trust", "verify", str(chain), "--snapshot", str(snap), "--program", "chrome",
            "--program", "mozilla", "--name", "www.example.test"]
    # 2024-11-25: Chrome 131 is stable; the SCT (2024-11-20) is after the 2024-11-11 cut-off
    assert main([*base, "--at", "2024-11-25T00:00:00Z"]) == 1
    out = capsys.readouterr().out
    assert "chrome     NOT TRUSTED  sct_constraint: earliest SCT 2024-11-20T00:00:00Z" in out
    assert "mozilla    trusted" in out
    # the same chain judged by Chrome 130 (before 131 shipped): trusted, with a forecast
    assert main([*base, "--at", "2024-11-25T00:00:00Z", "--chrome-version", "130"]) == 0
    out = capsys.readouterr().out
    # Chrome 131 is already out on --at, so the forecast date is --at itself
    assert "forecast 2024-11-25T00:00:00+00:00 (certificate): from Chrome 131" in out
    # after Mozilla's cut-off a later certificate would fail; this one is dated before it
    assert main([*base, "--at", "2024-12-05T00:00:00Z", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    verdicts = {v["program"]: v for v in doc["verdicts"]}
    assert verdicts["chrome"]["reason"] == "sct_constraint" and not verdicts["chrome"]["trusted"]
    assert verdicts["mozilla"]["trusted"] and verdicts["mozilla"]["path"][-1]["subject"] == "CN=Entrust-like Root"


def test_verify_bad_input_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "nothing.pem"
    bad.write_text("not a certificate\n")
    assert main(["trust", "verify", str(bad)]) == 2
    assert "nothing.pem" in capsys.readouterr().err
    assert main(["trust", "verify", str(bad), "--at", "yesterday"]) == 2


@needs_shared
def test_diff_between_the_shared_mozilla_snapshots(capsys: pytest.CaptureFixture[str]) -> None:
    old, new = SHARED / "mozilla" / "certdata-2024-11-15.txt", SHARED / "mozilla" / "certdata.txt"
    assert main(["trust", "diff", str(old), str(new), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    added_da = {r["name"] for r in doc["roots"]
                if r["kind"] == "constrained" and "distrust_after" in r["after"]
                and "distrust_after" not in r["before"]}
    assert added_da == {"Izenpe.com", "ePKI Root Certification Authority"}
    removed = {r["name"] for r in doc["roots"] if r["kind"] == "removed"}
    assert "Entrust Root Certification Authority - G2" in removed
    assert main(["trust", "diff", str(old), str(new)]) == 0
    assert "~ Izenpe.com" in capsys.readouterr().out


def test_diff_reports_site_verdict_change(lab: Lab, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from certfailover.trust.snapshot import Snapshot

    old = tmp_path / "old.json.gz"
    save_snapshot(lab.snap, old)
    moz = lab.snap.programs["mozilla"]
    roots = dict(moz.roots)
    roots[lab.plain.sha256] = replace(roots[lab.plain.sha256], distrust_after=datetime(2024, 1, 15, tzinfo=UTC))
    progs = dict(lab.snap.programs)
    progs["mozilla"] = replace(moz, roots=roots)
    new = tmp_path / "new.json.gz"
    save_snapshot(Snapshot(built=lab.snap.built, programs=progs, certs=lab.snap.certs), new)
    ica = make_intermediate(lab.plain, "Diff CA")
    chain = tmp_path / "site.pem"
    chain.write_bytes(pem(make_leaf(ica, not_before=datetime(2024, 2, 1, tzinfo=UTC)), ica.cert))
    assert main(["trust", "diff", str(old), str(new), "--site", f"shop={chain}",
                 "--at", "2024-02-02T00:00:00Z", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sites"] == [{"label": "shop", "program": "mozilla", "before": "trusted",
                             "after": "distrust_after", "detail": doc["sites"][0]["detail"]}]
    assert [r["kind"] for r in doc["roots"]] == ["constrained"]


@needs_shared
def test_update_from_shared_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "snap.json.gz"
    obs = SHARED / "observatory"
    rc = main(["trust", "update", "--fresh", "--output", str(out),
               "--source", f"chrome={SHARED / 'chrome' / 'root_store.textproto'}@@test-rev",
               "--source", f"apple={obs / 'apple.pem'},{obs / 'apple.yaml'}",
               "--pool", str(SHARED / "mozilla" / "certdata-2024-11-15.txt"),
               "--pool", str(obs / "mozilla_nss.pem"), "--pool", str(obs / "microsoft_windows.pem")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "[1/6] importing chrome from" in err and "[6/6] compiling the snapshot" in err
    snap = read_snapshot(out)
    assert set(snap.programs) == {"chrome", "apple"}
    assert len(snap.programs["chrome"].roots) == 134 and snap.programs["chrome"].unresolved == ()
    assert snap.programs["chrome"].provenance.version == "test-rev"
    assert snap.programs["apple"].provenance.date == "2025-12-28"
    assert main(["trust", "update", "--output", str(out), "--source", "chrome"]) == 2
    assert "NAME=FILE_OR_URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("root", "program", "issued", "names", "before", "after", "reason"),
    [
        # Chrome SCT cut-off 2024-11-11 with min_version 131 (stable since 2024-11-12)
        ("entrust", "chrome", "2024-11-20", ("www.example.test",), None, "2024-12-01", "sct_constraint"),
        # Microsoft disallowed date 2025-01-01: time travel across it
        ("ms", "microsoft", "2024-05-01", ("www.example.test",), "2024-12-31", "2025-01-02", "root_removed"),
        # validity window (notBefore <= 2024-07-01): the leaf itself is fixed, so compare two leaves
        ("validity", "chrome", "2024-09-01", ("www.example.test",), None, "2024-09-02", "validity_constraint"),
        ("names", "chrome", "2024-01-01", ("www.other.test",), None, "2024-01-02", "name_constraint"),
        ("entrust", "mozilla", "2024-12-05", ("www.example.test",), None, "2024-12-06", "distrust_after"),
    ],
)
def test_verify_each_constraint_type(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     root: str, program: str, issued: str, names: tuple[str, ...],
                                     before: str | None, after: str, reason: str) -> None:
    snap = tmp_path / "lab.json.gz"
    save_snapshot(lab.snap, snap)
    ica = make_intermediate(getattr(lab, root), f"CLI {root} CA")
    when = datetime.fromisoformat(issued).replace(tzinfo=UTC)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pem(make_leaf(ica, names, not_before=when, days=365, scts=[when]), ica.cert))
    args = ["trust", "verify", str(chain), "--snapshot", str(snap), "--program", program, "--json"]
    if before is not None:
        assert main([*args, "--at", before]) == 0
        assert json.loads(capsys.readouterr().out)["verdicts"][0]["trusted"] is True
    assert main([*args, "--at", after]) == 1
    v = json.loads(capsys.readouterr().out)["verdicts"][0]
    assert v["trusted"] is False and v["reason"] == reason and v["program"] == program


def test_diff_reports_configured_sites_from_the_store(lab: Lab, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """With a config, `trust diff` judges every stored certificate of the configured sites."""
    from dataclasses import replace

    from cryptography.hazmat.primitives.serialization import Encoding

    from certfailover import keys
    from certfailover.engine import describe
    from certfailover.model import CertState
    from certfailover.store.db import Database
    from certfailover.store.vault import Vault
    from certfailover.trust.snapshot import Snapshot

    old = tmp_path / "old.json.gz"
    save_snapshot(lab.snap, old)
    moz = lab.snap.programs["mozilla"]
    roots = dict(moz.roots)
    roots.pop(lab.plain.sha256)  # the next program update drops the site's root
    new = tmp_path / "new.json.gz"
    save_snapshot(Snapshot(built=lab.snap.built, programs={**lab.snap.programs,
                                                           "mozilla": replace(moz, roots=roots)},
                           certs=lab.snap.certs), new)
    ica = make_intermediate(lab.plain, "Store CA")
    leaf = make_leaf(ica, not_before=datetime(2024, 2, 1, tzinfo=UTC))
    store = tmp_path / "store"
    vault, db = Vault(store), Database(f"sqlite:///{store / 'state.db'}")
    vault.ensure()
    db.migrate()
    d = vault.save("www", "ca-x", format(leaf.serial_number, "x"),
                   leaf_pem=leaf.public_bytes(Encoding.PEM), chain_pem=ica.cert.public_bytes(Encoding.PEM),
                   key_pem=keys.key_pem(keys.generate("ec-p256")))
    db.add_cert(describe("www", "ca-x", leaf, d, CertState.ACTIVE, datetime.now(UTC)))
    cfg = tmp_path / "certfailover.toml"
    cfg.write_text(f'[store]\ndirectory = "{store}"\n[[ca]]\nname = "ca-x"\ndirectory = "https://x.test/d"\n'
                   '[[ca]]\nname = "ca-y"\ndirectory = "https://y.test/d"\n'
                   '[[site]]\nname = "www"\ndomains = ["www.example.test"]\ncas = ["ca-x", "ca-y"]\n')
    assert main(["--config", str(cfg), "trust", "diff", str(old), str(new),
                 "--at", "2024-02-02T00:00:00Z", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    changed = {(s["label"], s["program"], s["before"]) for s in doc["sites"]}
    assert (f"www/ca-x/{format(leaf.serial_number, 'x')} (active)", "mozilla", "trusted") in changed


def test_diff_says_from_when_a_ca_can_no_longer_issue(lab: Lab, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    from certfailover.trust.snapshot import Snapshot

    old = tmp_path / "old.json.gz"
    save_snapshot(lab.snap, old)
    moz = lab.snap.programs["mozilla"]
    roots = dict(moz.roots)
    cut = datetime(2024, 3, 1, tzinfo=UTC)  # a distrust-after the new data adds, still ahead
    roots[lab.plain.sha256] = replace(roots[lab.plain.sha256], distrust_after=cut)
    progs = dict(lab.snap.programs)
    progs["mozilla"] = replace(moz, roots=roots)
    new = tmp_path / "new.json.gz"
    save_snapshot(Snapshot(built=lab.snap.built, programs=progs, certs=lab.snap.certs), new)
    ica = make_intermediate(lab.plain, "Diff CA 2")
    chain = tmp_path / "site.pem"
    chain.write_bytes(pem(make_leaf(ica, not_before=datetime(2024, 1, 1, tzinfo=UTC)), ica.cert))
    site = f"www/plain-ca/01 (active)={chain}"
    assert main(["trust", "diff", str(old), str(new), "--site", site,
                 "--at", "2024-02-01T00:00:00Z", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [x["after"] for x in doc["sites"]] == ["trusted"], "the certificate stays trusted"
    (change,) = doc["issuers"]
    assert change["ca"] == "plain-ca" and change["program"] == "mozilla"
    assert change["date"].startswith("2024-03-01")
    assert main(["trust", "diff", str(old), str(new), "--site", site,
                 "--at", "2024-03-02T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "from now, CA plain-ca can no longer issue for mozilla" in out
