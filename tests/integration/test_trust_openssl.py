"""The trust engine against real processes: `openssl verify` as an independent oracle for
unconstrained programs, and the `certfailover trust` CLI run as a subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "trust"))
from trustpki import CA, make_intermediate, make_leaf, make_root, pem

from certfailover.trust.evaluate import Reason, TrustEngine
from certfailover.trust.snapshot import build_snapshot, save_snapshot
from certfailover.trust.sources.pembundle import import_bundle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed"),
]
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "data" / "trust"
AT = datetime(2024, 3, 1, tzinfo=UTC)


def _openssl_ok(tmp: Path, bundle: list[CA], leaf: x509.Certificate,
                chain: list[x509.Certificate], at: datetime) -> bool:
    (tmp / "roots.pem").write_bytes(pem(*(c.cert for c in bundle)))
    (tmp / "untrusted.pem").write_bytes(pem(*chain) if chain else b"")
    (tmp / "leaf.pem").write_bytes(pem(leaf))
    cmd = ["openssl", "verify", "-CAfile", str(tmp / "roots.pem"), "-purpose", "sslserver",
           "-attime", str(int(at.timestamp())), str(tmp / "leaf.pem")]
    if chain:
        cmd[2:2] = ["-untrusted", str(tmp / "untrusted.pem")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return res.returncode == 0 and ": OK" in res.stdout


def test_agrees_with_openssl_verify(tmp_path: Path) -> None:
    root, other, root_b = make_root("Oracle Root"), make_root("Oracle Other Root"), make_root("Oracle Root B")
    ica = make_intermediate(root, "Oracle CA")
    client_only = make_intermediate(root, "Oracle Client CA", ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])
    b_ica = make_intermediate(root_b, "Oracle B CA")
    cross = make_intermediate(root, "Oracle Root B", key_label="Oracle Root B")  # Root B signed by Root
    cases: list[tuple[str, x509.Certificate, list[x509.Certificate], datetime]] = [
        ("good", make_leaf(ica), [ica.cert], AT),
        ("expired", make_leaf(ica, days=30), [ica.cert], AT),
        ("not yet valid", make_leaf(ica), [ica.cert], AT - timedelta(days=400)),
        ("unknown root", make_leaf(make_intermediate(other, "Oracle Other CA")), [], AT),
        ("client-only intermediate", make_leaf(client_only), [client_only.cert], AT),
        ("no intermediate", make_leaf(ica), [], AT),
        ("via cross-sign", make_leaf(b_ica), [b_ica.cert, cross.cert], AT),
        ("no cross-sign", make_leaf(b_ica), [b_ica.cert], AT),
    ]
    bundle = [root]
    snap = build_snapshot([import_bundle("custom", pem(root.cert), source="oracle.pem")], built=AT)
    engine = TrustEngine(snap)
    answers = {}
    for i, (label, leaf, chain, at) in enumerate(cases):
        d = tmp_path / str(i)
        d.mkdir()
        ours = engine.evaluate(leaf, chain, at=at).verdict("custom")
        theirs = _openssl_ok(d, bundle, leaf, chain, at)
        answers[label] = (ours.trusted, theirs, ours.reason)
    assert all(o == t for o, t, _ in answers.values()), answers
    assert [k for k, (o, _, _) in answers.items() if o] == ["good", "via cross-sign"]
    assert answers["expired"][2] is Reason.EXPIRED and answers["unknown root"][2] is Reason.NO_PATH


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "ignore", "-m", "certfailover.cli.main", *args],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def test_cli_verify_as_a_process(tmp_path: Path) -> None:
    root = make_root("CLI Process Root")
    ica = make_intermediate(root, "CLI Process CA")
    snap = build_snapshot([import_bundle("apple", pem(root.cert), source="cli.pem")], built=AT)
    save_snapshot(snap, tmp_path / "s.json.gz")
    (tmp_path / "chain.pem").write_bytes(pem(make_leaf(ica, ["www.example.test"]), ica.cert))
    ok = _cli("trust", "verify", str(tmp_path / "chain.pem"), "--snapshot", str(tmp_path / "s.json.gz"),
              "--at", "2024-02-01T00:00:00Z", "--name", "www.example.test", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["verdicts"][0]["program"] == "apple" and doc["verdicts"][0]["trusted"] is True
    late = _cli("trust", "verify", str(tmp_path / "chain.pem"), "--snapshot", str(tmp_path / "s.json.gz"),
                "--at", "2025-02-01T00:00:00Z")
    assert late.returncode == 1 and "expired" in late.stdout


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared trust data absent")
def test_cli_diff_of_the_shared_mozilla_files() -> None:
    res = _cli("trust", "diff", str(SHARED / "mozilla" / "certdata-2024-11-15.txt"),
               str(SHARED / "mozilla" / "certdata.txt"))
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "constrained: [none] -> [distrust_after=" in ln]
    assert len(lines) == 2
    assert any("Izenpe.com" in ln and "2026-04-15" in ln for ln in lines)
    assert any("ePKI Root Certification Authority" in ln and "2025-04-15" in ln for ln in lines)
