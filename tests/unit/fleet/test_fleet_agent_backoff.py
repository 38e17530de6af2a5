"""The agent's per-record faults and its backoff, without a database or a web server: a record
that does not unseal or cannot be written is an error naming the certificate id and the cause
(the others are written); a site that failed with a desired certificate waits 5 s, 10 s, ...
at most 5 min before it is tried again with it, and a new certificate resets that."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from certfailover.fleet import sealed
from certfailover.fleet.agent import Agent, AgentSite
from certfailover.fleet.sealed import Kek, Keyring, Plain
from certfailover.store.vault import Vault

PLAIN = Plain(b"-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
              b"-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n",
              b"-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n")


class Unused:
    name = "nginx"

    def apply(self, changes: object) -> None:
        raise AssertionError("no switch here")


def agent(tmp_path: Path, ring: Keyring, vault: Vault | None = None,
          clock: list[float] | None = None) -> Agent:
    t = clock if clock is not None else [0.0]
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never used
    return Agent("web1", engine, ring, vault or Vault(tmp_path / "vault"), {"nginx": Unused()},
                 [AgentSite(s, "nginx", (), f"{s}.test") for s in ("www", "api", "shop")],
                 validate=lambda chain, sni: None, clock=lambda: t[0])


def test_each_record_fails_alone_with_its_certificate_id_and_cause(tmp_path: Path) -> None:
    ring = Keyring(Kek(os.urandom(32)))
    a = agent(tmp_path, ring)
    a.vault.ensure()
    good = sealed.seal(ring, "www/ca-a/1", "www", PLAIN)
    bad = sealed.seal(ring, "api/ca-a/2", "api", PLAIN)
    bad = sealed.Sealed(bad.cert_id, bad.site, bad.kek_id, bad.nonce,
                        bytes([bad.ciphertext[0] ^ 1]) + bad.ciphertext[1:])
    foreign = sealed.seal(Keyring(Kek(os.urandom(32))), "shop/ca-a/3", "shop", PLAIN)
    errors = a._write({r.cert_id: r for r in (good, bad, foreign)})
    assert set(errors) == {"api/ca-a/2", "shop/ca-a/3"}
    assert errors["api/ca-a/2"].startswith("certificate api/ca-a/2: cannot unseal:")
    assert "does not authenticate" in errors["api/ca-a/2"]
    assert "which this host does not have" in errors["shop/ca-a/3"]
    key = a.vault.archive_dir("www", "ca-a", "1") / "privkey.pem"
    assert key.read_bytes() == PLAIN.key_pem and key.stat().st_mode & 0o777 == 0o600
    assert a._has("www/ca-a/1") and not a._has("api/ca-a/2")


class FullDisk(Vault):
    def save(self, site: str, ca: str, serial: str, *, leaf_pem: bytes, chain_pem: bytes,
             key_pem: bytes, alt_chains_pem: Sequence[bytes] = ()) -> Path:
        raise OSError(28, "No space left on device")


def test_a_disk_error_is_reported_not_raised(tmp_path: Path) -> None:
    ring = Keyring(Kek(os.urandom(32)))
    a = agent(tmp_path, ring, FullDisk(tmp_path / "vault"))
    errors = a._write({"www/ca-a/1": sealed.seal(ring, "www/ca-a/1", "www", PLAIN)})
    assert errors == {"www/ca-a/1": "certificate www/ca-a/1: cannot write it into the vault: "
                                    "OSError: [Errno 28] No space left on device"}


def test_backoff_doubles_to_five_minutes_and_resets_for_a_new_certificate(
        tmp_path: Path) -> None:
    t = [100.0]
    a = agent(tmp_path, Keyring(Kek(os.urandom(32))), clock=t)
    assert a.next_retry() is None
    delays = []
    for _ in range(8):
        note = a._back_off("api", "api/ca-a/1")
        delays.append(a.next_retry())
        assert "api/ca-a/1" in note and "UTC" in note
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300]
    assert "attempt 8" in note and "next try in 300 s" in note
    t[0] += 120
    assert a.next_retry() == 180
    note = a._back_off("api", "api/ca-b/2")  # another desired certificate: a fresh count
    assert "attempt 1 with api/ca-b/2" in note and a.next_retry() == 5
