"""Bad root-program data gets a clear error and loses nothing.

Truncated or empty upstream files, a program that shrinks a lot, a CT precertificate, the
default output of ``trust update``, and how distrust entries are counted and diffed.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from trustpki import CA, T0, Lab, certdata, make_intermediate, make_root, pem

from certfailover.cli.main import main
from certfailover.config import TrustSettings, parse
from certfailover.errors import CertFailoverError, TrustDataError
from certfailover.trust.evaluate import Reason
from certfailover.trust.refresh import Refresher
from certfailover.trust.snapshot import PACKAGED_SNAPSHOT, Snapshot, read_snapshot, save_snapshot
from certfailover.trust.sources.load import MAX_SHRINK, SourceSpec, check_shrink, import_spec


def trust_table(table: dict[str, object], base: Path) -> TrustSettings:
    """The `[trust]` table as config.load parses it."""
    return parse({"trust": table}, file="t.toml", base=base, env={}).trust

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "trust"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="shared trust data absent")
NOW = datetime(2026, 4, 20, tzinfo=UTC)
OBS = "observatory"


def _read(rel: str) -> bytes:
    return (SHARED / rel).read_bytes()


@pytest.fixture
def current(tmp_path: Path) -> Path:
    """The snapshot in use: a copy of the packaged one (mozilla 121, chrome 134, ...)."""
    out = tmp_path / "current.json.gz"
    shutil.copyfile(PACKAGED_SNAPSHOT, out)
    return out


# -- object-boundary cuts and empty files, through the CLI ---------------------------------


def _nth(data: bytes, needle: bytes, n: int) -> int:
    pos = -1
    for _ in range(n):
        pos = data.index(needle, pos + 1)
    return pos


def _certdata_after_pair(n: int) -> Callable[[bytes], bytes]:
    """Cut just before the comment block of certificate n+1: n complete pairs remain."""
    return lambda d: d[:_nth(d, b"\n#\n# Certificate", n + 1) + 1]


def _certdata_between_cert_and_trust(d: bytes) -> bytes:
    return d[:_nth(d, b"\n# Trust for", 60) + 1]


def _certdata_in_comment(d: bytes) -> bytes:
    start = _nth(d, b"\n#\n# Certificate", 55) + 1
    return d[:d.index(b"\n", d.index(b"# Serial", start)) + 1]  # after whole comment lines


def _textproto_after_anchor(n: int) -> Callable[[bytes], bytes]:
    return lambda d: d[:d.index(b"}\n", _nth(d, b"trust_anchors {", n)) + 2]


def _textproto_in_comment(d: bytes) -> bytes:
    return d[:d.index(b"\n", _nth(d, b"\n# CN=", 63) + 1) + 1]


def _stl_without_signature(d: bytes) -> bytes:
    from certfailover.trust.sources import microsoft as ms

    eci = ms._ContentInfo.load(d)["content"]["encap_content_info"].dump()
    return d[:d.index(eci) + len(eci)]  # the CTL is complete, the signer part is cut


def _stl_at_subject(d: bytes) -> bytes:
    from certfailover.trust.sources import microsoft as ms

    ctl = ms._ContentInfo.load(d)["content"]["encap_content_info"]["content"]
    subj = ctl["trusted_subjects"][200].dump()
    return d[:d.index(subj) + len(subj)]  # 201 complete trusted subjects


def _pem_after_block(n: int) -> Callable[[bytes], bytes]:
    end = b"-----END CERTIFICATE-----\r\n"  # the sslyze bundles use CRLF
    return lambda d: d[:_nth(d, end, n) + len(end)]


def _empty(_d: bytes) -> bytes:
    return b""


MOZ, CHR, MS, APPLE = "mozilla/certdata.txt", "chrome/root_store.textproto", "microsoft/authroot.stl", f"{OBS}/apple.pem"
BOUNDARY_CASES = [
    # (program, upstream file, with YAML metadata, cut, expected error text)
    ("mozilla", MOZ, False, _certdata_after_pair(54), r"38 trusted roots, down from 121"),  # 54 pairs, 38 for websites
    ("mozilla", MOZ, False, _certdata_after_pair(120), r"trusted roots, down from 121"),
    ("mozilla", MOZ, False, _certdata_between_cert_and_trust, r"the last object is a CKO_CERTIFICATE, not the trust object"),
    ("mozilla", MOZ, False, _certdata_in_comment, r"ends in a comment after the last object"),
    ("mozilla", MOZ, False, _empty, r"empty file"),
    ("chrome", CHR, False, _textproto_after_anchor(62), r"62 trusted roots, down from 134"),
    ("chrome", CHR, False, _textproto_in_comment, r"not the closing"),
    ("chrome", CHR, False, lambda d: d.replace(b"version_major: 17\n", b""), r"no version_major"),
    ("chrome", CHR, False, _empty, r"empty file"),
    ("microsoft", MS, False, _stl_without_signature, r"truncated or not a Microsoft authroot.stl"),
    ("microsoft", MS, False, _stl_at_subject, r"truncated or not a Microsoft authroot.stl"),
    ("microsoft", MS, False, _empty, r"empty file"),
    ("apple", APPLE, True, _pem_after_block(77), r"not in .*apple.pem \(truncated bundle\?\)"),
    ("apple", APPLE, False, _pem_after_block(77), r"77 trusted roots, down from 156"),
    ("apple", APPLE, False, lambda d: d[:_nth(d, b"-----BEGIN", 78) + 100], r"78 BEGIN and 77 END"),
    ("apple", APPLE, False, lambda d: d[:_nth(d, b"-----END", 77) + 12], r"last END line is cut"),
    ("apple", APPLE, False, _empty, r"empty file"),
]


@needs_shared
@pytest.mark.parametrize(("program", "rel", "meta", "cut", "expected"), BOUNDARY_CASES)
def test_cut_or_empty_source_exits_2_and_keeps_the_snapshot(
    tmp_path: Path, current: Path, capsys: pytest.CaptureFixture[str], program: str, rel: str,
    meta: bool, cut: Callable[[bytes], bytes], expected: str,
) -> None:
    src = tmp_path / Path(rel).name
    src.write_bytes(cut(_read(rel)))
    spec = f"{program}={src}"
    if meta:
        spec += f",{SHARED / OBS / 'apple.yaml'}"
    before = current.read_bytes()
    assert main(["trust", "update", "--output", str(current), "--source", spec]) == 2
    err = capsys.readouterr().err
    assert str(src) in err, err
    assert re.search(expected, err), err
    assert current.read_bytes() == before


# -- the sweep: random byte cuts of every shipped source ----------------------------------

SWEEP = [
    ("mozilla", MOZ, None),
    ("chrome", CHR, None),
    ("microsoft", MS, None),
    ("microsoft", "microsoft/authroot_unsigned.stl", None),
    ("apple", APPLE, f"{OBS}/apple.yaml"),  # bundle with its YAML manifest
    ("android", f"{OBS}/google_aosp.pem", None),  # bundle alone: PEM blocks + shrink rule
    ("apple", f"{OBS}/apple.yaml", "yaml"),  # the manifest itself cut
]


@needs_shared
@pytest.mark.parametrize(("program", "rel", "meta"), SWEEP)
def test_random_cuts_import_nothing(tmp_path: Path, program: str, rel: str, meta: str | None) -> None:
    """50 seeded random cut offsets per file: every one is refused, by the format's structure
    or, for a cut that lands exactly on an object boundary, by the shrink rule against the
    shipped snapshot (the data in use)."""
    shipped = read_snapshot(PACKAGED_SNAPSHOT)
    data = _read(rel)
    rng = random.Random(f"{rel}-2026")
    caught: dict[str, int] = {"structure": 0, "shrink": 0}
    for _ in range(50):
        at = rng.randrange(len(data) - 1)  # strictly shorter than the file
        cut = tmp_path / Path(rel).name
        cut.write_bytes(data[:at])
        if meta == "yaml":
            spec = SourceSpec(program, str(SHARED / APPLE), str(cut))
        elif meta:
            spec = SourceSpec(program, str(cut), str(SHARED / meta))
        else:
            spec = SourceSpec(program, str(cut))
        try:
            imp = import_spec(spec, now=NOW)
        except TrustDataError as exc:
            assert str(cut) in str(exc), exc
            caught["structure"] += 1
            continue
        with pytest.raises(TrustDataError, match="down from") as info:
            check_shrink(imp.program, shipped.programs[program], source=str(cut),
                         current="shipped", allow=False)
        assert str(cut) in str(info.value)
        caught["shrink"] += 1
    assert sum(caught.values()) == 50
    print(f"{rel}: {caught}")


# -- shrink refusal, --allow-shrink, the scheduled refresh ----------------------------------


@needs_shared
def test_shrink_is_refused_unless_confirmed(tmp_path: Path, current: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    d = _read(MOZ)
    src = tmp_path / "certdata.txt"
    src.write_bytes(_certdata_after_pair(100)(d))  # 100 of 167 pairs: 21% fewer websites roots
    before = current.read_bytes()
    assert main(["trust", "update", "--output", str(current), "--source", f"mozilla={src}"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and "mozilla" in err and "down from 121" in err
    assert "--allow-shrink" in err and str(current) in err
    assert current.read_bytes() == before
    assert main(["trust", "update", "--output", str(current), "--source", f"mozilla={src}",
                 "--allow-shrink", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    n = doc["programs"]["mozilla"]["roots"]
    assert n < 121 * (1 - MAX_SHRINK) and read_snapshot(current).programs["mozilla"].trusted_count() == n
    # a small removal (within 10%) needs no confirmation: the last pair cut off
    src.write_bytes(_certdata_after_pair(166)(d))
    shutil.copyfile(PACKAGED_SNAPSHOT, current)
    assert main(["trust", "update", "--output", str(current), "--source", f"mozilla={src}"]) == 0


def test_scheduled_refresh_refuses_a_shrink_unless_allowed(tmp_path: Path) -> None:
    from certfailover.testing import pki

    roots = [pki.make_root(f"Shrink Root {i}") for i in range(10)]
    bundle = pki.write_bundle(tmp_path / "apple.pem", *roots)
    out = tmp_path / "snap.json.gz"
    settings = trust_table({"sources": [f"apple={bundle}"], "snapshot": str(out),
                                     "allow_shrink": True}, tmp_path)
    assert settings.allow_shrink is True
    Refresher(settings).run(NOW)  # 156 packaged apple roots -> 10: confirmed by allow_shrink
    pki.write_bundle(bundle, *roots[:8])  # 20% fewer
    strict = Refresher(replace(settings, allow_shrink=False))
    before = out.read_bytes()
    with pytest.raises(CertFailoverError) as info:
        strict.run(NOW + timedelta(days=1))
    msg = str(info.value)
    assert str(bundle) in msg and "apple" in msg and "8 trusted roots, down from 10" in msg
    assert out.read_bytes() == before
    with pytest.raises(CertFailoverError, match=r"\[trust\]\.allow_shrink"):
        trust_table({"allow_shrink": "yes"}, tmp_path)


# -- CT precertificate ---------------------------------------------------------------------


def _leaf(issuer: CA, *, poison: bool, critical_oid: str | None = None) -> x509.Certificate:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.test")]))
        .issuer_name(issuer.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0).not_valid_after(T0 + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.example.test")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if poison:
        b = b.add_extension(x509.PrecertPoison(), critical=True)
    if critical_oid:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(critical_oid), b"\x05\x00"),
                            critical=True)
    return b.sign(issuer.key, hashes.SHA256())


def test_ct_precertificate_is_not_trusted(lab: Lab, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ica = make_intermediate(lab.plain, "Precert CA")
    at = T0 + timedelta(days=1)
    cert = _leaf(ica, poison=False)
    precert = _leaf(ica, poison=True)
    assert lab.engine.evaluate(cert, [ica.cert], at=at, programs=["mozilla"]).verdicts[0].trusted
    v = lab.engine.evaluate(precert, [ica.cert], at=at, programs=["mozilla", "chrome", "apple"])
    assert {x.program: (x.trusted, x.reason) for x in v.verdicts} == {
        p: (False, Reason.CRITICAL_EXTENSION) for p in ("mozilla", "chrome", "apple")}
    assert "1.3.6.1.4.1.11129.2.4.3" in v.verdicts[0].detail and "precertificate" in v.verdicts[0].detail
    # any unknown critical extension, in an intermediate too
    other = _leaf(ica, poison=False, critical_oid="1.2.3.4.5")
    assert lab.engine.evaluate(other, [ica.cert], at=at, programs=["mozilla"]).verdicts[0].reason \
        is Reason.CRITICAL_EXTENSION
    # through the CLI: exit 1, reason shown
    snap = tmp_path / "lab.json.gz"
    save_snapshot(lab.snap, snap)
    chain = tmp_path / "precert.pem"
    chain.write_bytes(pem(precert, ica.cert))
    assert main(["trust", "verify", str(chain), "--snapshot", str(snap), "--program", "mozilla",
                 "--at", at.isoformat()]) == 1
    assert "NOT TRUSTED  critical_extension" in capsys.readouterr().out


# -- where `trust update` writes -------------------------------------------------------------


def _apple_bundle(tmp_path: Path) -> Path:
    from certfailover.testing import pki

    return pki.write_bundle(tmp_path / "apple.pem", pki.make_root("Output Root"))


def test_update_without_output_refuses_instead_of_writing_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CERTFAILOVER_TRUST_SNAPSHOT", raising=False)
    monkeypatch.delenv("CERTFAILOVER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./certfailover.toml
    packaged = PACKAGED_SNAPSHOT.read_bytes()
    bundle = _apple_bundle(tmp_path)
    assert main(["trust", "update", "--fresh", "--source", f"apple={bundle}"]) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "[trust] snapshot" in err
    assert PACKAGED_SNAPSHOT.read_bytes() == packaged


def test_update_without_output_writes_the_configured_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CERTFAILOVER_TRUST_SNAPSHOT", raising=False)
    packaged = PACKAGED_SNAPSHOT.read_bytes()
    bundle = _apple_bundle(tmp_path)
    target = tmp_path / "var" / "trust.json.gz"
    cfg = tmp_path / "certfailover.toml"
    cfg.write_text(f'[store]\ndirectory = "{tmp_path / "store"}"\n'
                   f'[trust]\nsnapshot = "{target}"\n')
    assert main(["--config", str(cfg), "trust", "update", "--fresh", "--source", f"apple={bundle}"]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    assert set(read_snapshot(target).programs) == {"apple"}
    # with sources but no snapshot key: the store default the daemon and checks use
    cfg.write_text(f'[store]\ndirectory = "{tmp_path / "store"}"\n'
                   f'[trust]\nsources = ["apple={bundle}"]\n')
    assert main(["--config", str(cfg), "trust", "update", "--fresh", "--source", f"apple={bundle}"]) == 0
    assert (tmp_path / "store" / "trust-snapshot.json.gz").is_file()
    # $CERTFAILOVER_TRUST_SNAPSHOT (what `trust verify` and the checks read without a config)
    env_target = tmp_path / "env.json.gz"
    monkeypatch.setenv("CERTFAILOVER_TRUST_SNAPSHOT", str(env_target))
    cfg.write_text(f'[store]\ndirectory = "{tmp_path / "store"}"\n')
    assert main(["--config", str(cfg), "trust", "update", "--fresh", "--source", f"apple={bundle}"]) == 0
    assert env_target.is_file()
    assert PACKAGED_SNAPSHOT.read_bytes() == packaged


# -- reporting: distrust entries are not roots -------------------------------------------------


def test_update_counts_trusted_roots_and_distrust_entries_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad1, bad2 = make_root("Count Good"), make_root("Count Bad 1"), make_root("Count Bad 2")
    src = tmp_path / "certdata.txt"
    src.write_bytes(certdata([(good, "CKT_NSS_TRUSTED_DELEGATOR", None, None),
                              (bad1, "CKT_NSS_NOT_TRUSTED", None, None),
                              (bad2, "CKT_NSS_NOT_TRUSTED", None, None)]))
    out = tmp_path / "s.json.gz"
    assert main(["trust", "update", "--fresh", "--output", str(out), "--source", f"mozilla={src}"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"mozilla\s+1 trusted roots\s+2 distrust entries", text), text
    assert main(["trust", "update", "--fresh", "--output", str(out), "--source", f"mozilla={src}",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["programs"]["mozilla"]
    assert (doc["roots"], doc["distrust_entries"]) == (1, 2)
    # only distrust entries: an empty program, refused
    src.write_bytes(certdata([(bad1, "CKT_NSS_NOT_TRUSTED", None, None)]))
    assert main(["trust", "update", "--fresh", "--output", str(out), "--source", f"mozilla={src}"]) == 2
    assert "no trusted roots" in capsys.readouterr().err


def test_diff_names_a_removed_distrust_entry(lab: Lab, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old.json.gz"
    save_snapshot(lab.snap, old)
    moz = lab.snap.programs["mozilla"]
    roots = dict(moz.roots)
    assert roots.pop(lab.blocked.sha256).distrusted
    roots.pop(lab.root_a.sha256)
    new = tmp_path / "new.json.gz"
    save_snapshot(Snapshot(built=lab.snap.built, programs={**lab.snap.programs,
                                                           "mozilla": replace(moz, roots=roots)},
                           certs=lab.snap.certs), new)
    assert main(["trust", "diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "mozilla: distrust entry removed: CN=Blocked Root" in out
    assert "mozilla: - CN=Root A" in out
    assert main(["trust", "diff", str(new), str(old), "--json"]) == 0
    kinds = {r["name"]: r["kind"] for r in json.loads(capsys.readouterr().out)["roots"]}
    assert kinds == {"CN=Blocked Root": "distrust_added", "CN=Root A": "added"}

