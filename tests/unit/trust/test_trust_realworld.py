"""Real-world certificates (cryptography-vectors) against the packaged snapshot, at dates
where the answer is known from the upstream data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cryptography_vectors
import pytest
from cryptography import x509

from certfailover.trust.evaluate import ForecastKind, Reason, TrustEngine, engine_for
from certfailover.trust.snapshot import build_snapshot, load_snapshot
from certfailover.trust.sources.chrome import import_root_store

VECTORS = Path(cryptography_vectors.__file__).parent / "x509"
DST_ROOT_X3 = "0687260331a72403d909f105e69bcf0d32e1bd2493ffc6d9206d11bcd6770739"
GEOTRUST_GLOBAL = "ff856a2d251dcd88d36656f450126798cfabaade40799c722de4d2b5db36a73a"


def _chain(*names: str) -> list[x509.Certificate]:
    return [c for n in names for c in x509.load_pem_x509_certificates((VECTORS / n).read_bytes())]


def test_packaged_snapshot_has_every_program_with_provenance() -> None:
    snap = load_snapshot()
    assert set(snap.programs) == {"mozilla", "chrome", "microsoft", "apple", "android", "java", "openjdk"}
    assert all(p.provenance.sha256 for p in snap.programs.values())
    assert snap.programs["chrome"].unresolved == ()
    assert load_snapshot() is snap  # cached per process


def test_rapidssl_geotrust_2016() -> None:
    certs = _chain("cryptography.io.chain.pem")
    ev = engine_for().evaluate(certs[0], certs[1:], at=datetime(2016, 1, 1, tzinfo=UTC),
                               name="www.cryptography.io")
    v = {x.program: x for x in ev.verdicts}
    # GeoTrust Global CA: in the Java stores and Microsoft's CTL, gone from Mozilla/Chrome/Apple/AOSP
    assert v["java"].trusted and v["openjdk"].trusted and v["java"].root == GEOTRUST_GLOBAL
    for p in ("mozilla", "chrome", "apple", "android"):
        assert v[p].reason is Reason.ROOT_NOT_INCLUDED
    ms = v["microsoft"]
    assert ms.trusted
    # Microsoft's CTL: NotBefore cut-off 2021-02-01, disabled 2023-02-01
    assert [(f.kind, f.date) for f in ms.forecasts] == [
        (ForecastKind.ISSUANCE, datetime(2021, 2, 1, tzinfo=UTC)),
        (ForecastKind.CERTIFICATE, datetime(2023, 2, 1, tzinfo=UTC)),
    ]
    assert engine_for().evaluate(certs[0], certs[1:], at=datetime(2019, 1, 1, tzinfo=UTC),
                                 programs=["java"]).verdict("java").reason is Reason.EXPIRED


def test_lets_encrypt_x3_via_dst_root() -> None:
    certs = _chain("cryptography-scts.pem", "letsencryptx3.pem")
    ev = engine_for().evaluate(certs[0], certs[1:], at=datetime(2018, 10, 15, tzinfo=UTC),
                               name="cryptography.io")
    assert ev.verdict("java").trusted and ev.verdict("java").root == DST_ROOT_X3
    assert ev.verdict("openjdk").reason is Reason.ROOT_NOT_INCLUDED  # removed before jdk-17.0.2
    assert ev.verdict("mozilla").reason is Reason.ROOT_NOT_INCLUDED


@pytest.mark.parametrize(("cutoff", "trusted"), [
    (datetime(2018, 9, 26, 20, 0, tzinfo=UTC), False),  # before the earliest real SCT (20:56:33)
    (datetime(2018, 9, 26, 21, 0, tzinfo=UTC), True),
])
def test_real_embedded_scts_against_a_chrome_constraint(cutoff: datetime, trusted: bool) -> None:
    proto = (f'version_major: 1\ntrust_anchors {{ sha256_hex: "{DST_ROOT_X3}" '
             f'constraints {{ sct_not_after_sec: {int(cutoff.timestamp())} }} }}').encode()
    imp = import_root_store(proto, source="test.textproto")
    snap = build_snapshot([imp], built=cutoff, pool=load_snapshot().certs)
    certs = _chain("cryptography-scts.pem", "letsencryptx3.pem")
    v = TrustEngine(snap).evaluate(certs[0], certs[1:], at=datetime(2018, 10, 1, tzinfo=UTC)).verdict("chrome")
    assert v.trusted is trusted
    if not trusted:
        assert v.reason is Reason.SCT_CONSTRAINT and "2018-09-26T20:56:33Z" in v.detail
