"""Sealed key material: AES-256-GCM per record, identity as associated data, KEK rotation."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from certfailover.fleet import sealed
from certfailover.fleet.sealed import Kek, Keyring, Plain, SealError
from certfailover.store import db as dbmod
from certfailover.tables import Secret

KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAsecretkeybytes\n-----END PRIVATE KEY-----\n"
PLAIN = Plain(b"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
              b"-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n", KEY_PEM)


def kek() -> Kek:
    return Kek(os.urandom(32))


def engine(db_url: Callable[[], str]) -> sa.Engine:
    d = dbmod.Database(db_url())
    d.migrate()
    return d.engine


def test_round_trip_and_fresh_nonce_per_seal() -> None:
    ring = Keyring(kek())
    a = sealed.seal(ring, "www/a/1", "www", PLAIN)
    b = sealed.seal(ring, "www/a/1", "www", PLAIN)
    assert a.nonce != b.nonce and a.ciphertext != b.ciphertext
    assert KEY_PEM not in a.ciphertext and b"leaf" not in a.ciphertext
    assert sealed.open_record(ring, a) == PLAIN
    assert a.kek_id == ring.current.id and len(a.kek_id) == 16


@pytest.mark.parametrize("field", ["ciphertext", "nonce"])
def test_a_tampered_record_does_not_open(field: str) -> None:
    ring = Keyring(kek())
    rec = sealed.seal(ring, "www/a/1", "www", PLAIN)
    data = bytearray(getattr(rec, field))
    data[len(data) // 2] ^= 0x01
    bad = sealed.Sealed(**{**rec.__dict__, field: bytes(data)})
    with pytest.raises(SealError, match="does not authenticate"):
        sealed.open_record(ring, bad)


def test_a_wrong_key_does_not_open() -> None:
    rec = sealed.seal(Keyring(kek()), "www/a/1", "www", PLAIN)
    with pytest.raises(SealError, match="which this host does not have"):
        sealed.open_record(Keyring(kek()), rec)
    # a different key presenting the same id still fails authentication
    impostor = Kek(os.urandom(32), id=rec.kek_id)
    with pytest.raises(SealError, match="does not authenticate"):
        sealed.open_record(Keyring(impostor), rec)


def test_a_ciphertext_swapped_between_records_does_not_open(
        db_url: Callable[[], str]) -> None:
    eng = engine(db_url)
    ring = Keyring(kek())
    with eng.begin() as conn:
        sealed.store(conn, sealed.seal(ring, "www/a/1", "www", PLAIN))
        sealed.store(conn, sealed.seal(ring, "api/b/2", "api", PLAIN))
    t = dbmod.fleet_sealed
    with eng.begin() as conn:  # an attacker with write access swaps the two rows' payloads
        one = conn.execute(sa.select(t).where(t.c.cert_id == "www/a/1")).one()
        two = conn.execute(sa.select(t).where(t.c.cert_id == "api/b/2")).one()
        conn.execute(t.update().where(t.c.cert_id == "www/a/1")
                     .values(nonce=two.nonce, ciphertext=two.ciphertext))
        conn.execute(t.update().where(t.c.cert_id == "api/b/2")
                     .values(nonce=one.nonce, ciphertext=one.ciphertext))
    with eng.connect() as conn:
        for cid in ("www/a/1", "api/b/2"):
            rec = sealed.load(conn, cid)
            assert rec is not None
            with pytest.raises(SealError, match=cid):
                sealed.open_record(ring, rec)
    # relabelling the site of an intact record fails the same way
    good = sealed.seal(ring, "www/a/3", "www", PLAIN)
    with pytest.raises(SealError):
        sealed.open_record(ring, sealed.Sealed(good.cert_id, "api", good.kek_id, good.nonce,
                                               good.ciphertext))


def test_rotation_reseals_everything_and_old_key_reads_meanwhile(
        db_url: Callable[[], str]) -> None:
    eng = engine(db_url)
    old, new = kek(), kek()
    with eng.begin() as conn:
        n = sealed.seal_many(conn, Keyring(old),
                             [(f"s{i}/a/{i}", f"s{i}", PLAIN) for i in range(7)])
    assert n == 7 and sealed.kek_ids(eng) == {old.id: 7}
    during = Keyring(new, (old,))
    with eng.begin() as conn:  # a record written during the rotation is sealed by the new key
        sealed.store(conn, sealed.seal(during, "s0/a/0", "s0", PLAIN))
    assert sealed.kek_ids(eng) == {old.id: 6, new.id: 1}
    with eng.connect() as conn:  # agents that have both keys read either
        assert all(sealed.open_record(during, r) == PLAIN
                   for r in (sealed.load(conn, f"s{i}/a/{i}") for i in range(7)) if r)
    assert sealed.rotate(eng, during, batch=4) == 6
    assert sealed.kek_ids(eng) == {new.id: 7}
    assert sealed.rotate(eng, during) == 0
    with eng.connect() as conn:
        recs = [sealed.load(conn, f"s{i}/a/{i}") for i in range(7)]
    assert all(r is not None and sealed.open_record(Keyring(new), r) == PLAIN for r in recs)
    with pytest.raises(SealError):  # the retired key opens nothing any more
        sealed.open_record(Keyring(old), recs[3])  # type: ignore[arg-type]


def test_rotation_without_the_old_key_stops_and_changes_nothing(
        db_url: Callable[[], str]) -> None:
    eng = engine(db_url)
    old = kek()
    with eng.begin() as conn:
        sealed.seal_many(conn, Keyring(old), [("w/a/1", "w", PLAIN), ("w/a/2", "w", PLAIN)])
    with pytest.raises(SealError, match="does not have"):
        sealed.rotate(eng, Keyring(kek()))
    assert sealed.kek_ids(eng) == {old.id: 2}


def test_kek_from_hex_and_base64_and_bad_text_never_quoted() -> None:
    raw = os.urandom(32)
    for text in (raw.hex(), base64.b64encode(raw).decode(),
                 base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert sealed.kek_from_secret(Secret(text, "env:K")).key == raw
    bad = "not-a-key-but-a-secret-value"
    with pytest.raises(ValueError, match="env:K") as info:
        sealed.kek_from_secret(Secret(bad, "env:K"))
    assert bad not in str(info.value)
    with pytest.raises(ValueError):
        sealed.kek_from_secret(Secret(os.urandom(16).hex(), "file:/k"))


def test_the_kek_is_never_shown(caplog: pytest.LogCaptureFixture,
                                db_url: Callable[[], str]) -> None:
    caplog.set_level(logging.DEBUG)
    k = kek()
    ring = Keyring(k, (kek(),))
    secret_forms = {k.key.hex(), base64.b64encode(k.key).decode(), repr(k.key)}
    eng = engine(db_url)
    with eng.begin() as conn:
        sealed.store(conn, sealed.seal(ring, "www/a/1", "www", PLAIN))
    sealed.rotate(eng, Keyring(kek(), (k,)))
    with eng.connect() as conn:
        rec = sealed.load(conn, "www/a/1")
    assert rec is not None
    with pytest.raises(SealError) as info:  # sealed by a key `ring` does not have
        sealed.open_record(ring, rec)
    shown = str(info.value)
    shown += repr(k) + repr(ring) + str(ring) + repr(PLAIN) + caplog.text
    assert not any(s in shown for s in secret_forms)
    assert "secretkeybytes" not in shown and k.id in repr(k)


def test_many_records_in_parts_replace_older_ones(db_url: Callable[[], str]) -> None:
    eng = engine(db_url)
    ring = Keyring(kek())
    items = [(f"s{i}/a/1", f"s{i}", PLAIN) for i in range(2300)]
    with eng.begin() as conn:
        assert sealed.seal_many(conn, ring, items[:10]) == 10
        assert sealed.seal_many(conn, ring, items) == 2300  # the first 10 are replaced
    with eng.connect() as conn:
        got = sealed.load_many(conn, [c for c, _, _ in items] + ["nope/a/1"])
    assert len(got) == 2300 and sealed.kek_ids(eng) == {ring.current.id: 2300}
    assert sealed.open_record(ring, got["s2299/a/1"]) == PLAIN
