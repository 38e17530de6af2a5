"""Importers on the real upstream files in ../shared/data/trust (facts checked against them)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from certfailover.errors import TrustDataError
from certfailover.trust.programs import SERVER_AUTH
from certfailover.trust.sources.chrome import import_root_store
from certfailover.trust.sources.microsoft import import_authroot
from certfailover.trust.sources.mozilla import import_certdata
from certfailover.trust.sources.pembundle import import_bundle

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "trust"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared trust data absent")

ENTRUST_CUTOFF = datetime(2024, 11, 11, 23, 59, 59, tzinfo=UTC)
GLOBALTRUST_CUTOFF = datetime(2024, 6, 30, 23, 59, 59, tzinfo=UTC)
ENTRUST_G2 = "43df5774b03e7fef5fe40d931a7bedf1bb2e6b42738c4e6d3841103d3aa7f339"
GLOBALTRUST_2020 = "9a296a5182d1d451a2e37f439b74daafa267523329f90f9a0d2007c334e23c9a"


def _read(rel: str) -> bytes:
    return (SHARED / rel).read_bytes()


def test_mozilla_current_counts_and_distrust_after() -> None:
    prog = import_certdata(_read("mozilla/certdata.txt"), source="certdata.txt").program
    assert len(prog.roots) == 121 and prog.trusted_count() == 121
    dated = {e.name: e.distrust_after for e in prog.roots.values() if e.distrust_after}
    # Izenpe's date sits on the trust object, ePKI's on the certificate object.
    assert dated == {
        "Entrust Root Certification Authority": datetime(2024, 11, 30, 23, 59, 59, tzinfo=UTC),
        "Izenpe.com": datetime(2026, 4, 15, 23, 59, 59, tzinfo=UTC),
        "ePKI Root Certification Authority": datetime(2025, 4, 15, 23, 59, 59, tzinfo=UTC),
    }
    assert ENTRUST_G2 not in prog.roots  # G2 lost its websites trust bit since 2024


def test_mozilla_2024_entrust_and_globaltrust() -> None:
    prog = import_certdata(_read("mozilla/certdata-2024-11-15.txt"), source="x").program
    assert prog.trusted_count() == 152
    dated = {e.name: e.distrust_after for e in prog.roots.values() if e.distrust_after}
    assert len(dated) == 9
    entrust = datetime(2024, 11, 30, 23, 59, 59, tzinfo=UTC)
    assert dated["Entrust Root Certification Authority - G2"] == entrust
    assert dated["AffirmTrust Premium ECC"] == entrust
    assert dated["GLOBALTRUST 2020"] == datetime(2024, 6, 30, tzinfo=UTC)
    assert prog.roots[ENTRUST_G2].distrust_after == entrust


def test_chrome_anchors_and_constraints() -> None:
    prog = import_root_store(_read("chrome/root_store.textproto"), source="x").program
    assert len(prog.roots) == 134
    constrained = {s: e for s, e in prog.roots.items() if e.constraints}
    assert len(constrained) == 10
    g2 = prog.roots[ENTRUST_G2]
    assert len(g2.constraints) == 2
    first, second = g2.constraints
    assert first.sct_not_after == ENTRUST_CUTOFF and first.min_version == "131"
    assert second.max_version_exclusive == "131" and second.sct_not_after is None
    gt = prog.roots[GLOBALTRUST_2020].constraints
    assert len(gt) == 1 and gt[0].sct_not_after == GLOBALTRUST_CUTOFF and gt[0].min_version is None
    assert prog.provenance.version == "version_major 17"


def test_microsoft_ctl_facts() -> None:
    prog = import_authroot(_read("microsoft/authroot.stl"), source="authroot.stl").program
    assert len(prog.roots) == 480
    assert prog.provenance.date == "2023-12-13T23:55:48+00:00"
    assert prog.provenance.version == "sequence 1401DA2E1FE5278C6C"
    tls = [e for e in prog.roots.values() if e.ekus is None or SERVER_AUTH in e.ekus]
    assert len(tls) == 376
    geotrust = next(e for e in prog.roots.values() if e.name == "GeoTrust Global CA")
    assert geotrust.removed_at == datetime(2023, 2, 1, tzinfo=UTC)
    assert geotrust.distrust_after == datetime(2021, 2, 1, tzinfo=UTC)
    old = import_authroot(_read("microsoft/authroot_unsigned.stl"), source="unsigned").program
    assert len(old.roots) == 447 and old.provenance.date == "2022-11-15T22:21:26+00:00"


@pytest.mark.parametrize(
    ("name", "stem", "count"),
    [("apple", "apple", 156), ("android", "google_aosp", 143), ("java", "oracle_java", 93),
     ("openjdk", "openjdk", 89)],
)
def test_pem_bundles_with_metadata(name: str, stem: str, count: int) -> None:
    imp = import_bundle(name, _read(f"observatory/{stem}.pem"), source=stem,
                        metadata=_read(f"observatory/{stem}.yaml"), metadata_source=f"{stem}.yaml")
    assert len(imp.program.roots) == count == len(imp.certs)
    assert imp.program.provenance.date is not None


def test_bad_inputs_name_the_source() -> None:
    with pytest.raises(TrustDataError, match="broken.txt"):
        import_certdata(b"BEGINDATA\nCKA_CLASS CK_OBJECT_CLASS CKO_CERTIFICATE\nCKA_VALUE MULTILINE_OCTAL\n\\060\n",
                        source="broken.txt")
    with pytest.raises(TrustDataError, match="store.textproto"):
        import_root_store(b"trust_anchors { bogus: 1 }", source="store.textproto")
    with pytest.raises(TrustDataError, match="roots.stl"):
        import_authroot(b"\x30\x03\x02\x01\x01", source="roots.stl")
    with pytest.raises(TrustDataError, match="b.pem"):
        import_bundle("apple", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", source="b.pem")


def test_packaged_snapshot_is_what_the_importers_build_from_the_shared_files() -> None:
    from certfailover.trust.snapshot import load_snapshot
    from certfailover.trust.sources.load import SourceSpec, build_from_specs

    obs = SHARED / "observatory"
    specs = [
        SourceSpec("mozilla", str(SHARED / "mozilla" / "certdata.txt")),
        SourceSpec("chrome", str(SHARED / "chrome" / "root_store.textproto")),
        SourceSpec("microsoft", str(SHARED / "microsoft" / "authroot.stl")),
        *(SourceSpec(n, str(obs / f"{f}.pem"), str(obs / f"{f}.yaml"))
          for n, f in (("apple", "apple"), ("android", "google_aosp"), ("java", "oracle_java"),
                       ("openjdk", "openjdk"))),
    ]
    pools = [str(obs / "microsoft_windows.pem"), str(obs / "mozilla_nss.pem"),
             str(SHARED / "mozilla" / "certdata-2024-11-15.txt")]
    built = build_from_specs(specs, pools=pools, now=datetime(2026, 1, 1, tzinfo=UTC))
    shipped = load_snapshot()
    assert set(built.programs) == set(shipped.programs)
    for name, prog in built.programs.items():
        assert prog.roots == shipped.programs[name].roots, name
        assert prog.unresolved == shipped.programs[name].unresolved, name
        assert prog.provenance.sha256 == shipped.programs[name].provenance.sha256, name
    assert built.certs == shipped.certs


def test_diff_of_the_two_microsoft_ctls() -> None:
    from certfailover.trust.diff import ChangeKind, diff_snapshots, load_any

    now = datetime(2026, 1, 1, tzinfo=UTC)
    old = load_any(str(SHARED / "microsoft" / "authroot_unsigned.stl"), built=now)
    new = load_any(str(SHARED / "microsoft" / "authroot.stl"), built=now)
    d = diff_snapshots(old, new, at=now)
    added = {c.name for c in d.roots if c.kind is ChangeKind.ADDED}
    assert {"Entrust 4K TLS Root CA - 2022", "AffirmTrust 4K TLS Root CA - 2022"} <= added
    assert len(added) - len([c for c in d.roots if c.kind is ChangeKind.REMOVED]) == 480 - 447


def test_public_api() -> None:
    from certfailover import trust

    assert set(trust.__all__) == {
        "KNOWN_PROGRAMS", "ConstraintSet", "Evaluation", "Forecast", "ForecastKind",
        "ProgramTrustCheck", "Provenance", "Reason", "RootEntry", "RootProgram", "Snapshot",
        "SnapshotDiff", "TrustEngine", "Verdict", "build_snapshot", "diff_snapshots",
        "engine_for", "load_any", "load_snapshot", "read_snapshot", "save_snapshot", "shares_root",
    }
    assert all(hasattr(trust, name) for name in trust.__all__)
