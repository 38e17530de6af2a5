from __future__ import annotations

import base64
import datetime as dt
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfailover.errors import InputError, StoreError
from certfailover.pins import KEY_TYPES, ensure_spare_key, generate_key, key_type_of, spki_pin


def openssl_pin_of_key(path: Path) -> str:
    """The pin as documented for HPKP / app pinning, computed by the openssl CLI."""
    pub = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=pub, check=True,
                            capture_output=True).stdout
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "ed25519"])
def test_pin_matches_openssl(tmp_path: Path, key_type: str) -> None:
    key = ensure_spare_key(tmp_path / "spare.pem", key_type)
    want = openssl_pin_of_key(tmp_path / "spare.pem")
    assert spki_pin(key.public_key()) == want
    assert len(base64.b64decode(want)) == 32


def test_pin_of_certificate_key_matches_openssl_x509(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pin.example")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = tmp_path / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pub = subprocess.run(["openssl", "x509", "-in", str(pem), "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der, check=True,
                            capture_output=True).stdout
    assert spki_pin(cert.public_key()) == base64.b64encode(digest).decode()


def test_different_keys_have_different_pins() -> None:
    a, b = generate_key("ec-p256"), generate_key("ec-p256")
    assert spki_pin(a.public_key()) != spki_pin(b.public_key())


def test_spare_key_is_created_once_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "vault" / "spare" / "site.example.pem"
    first = ensure_spare_key(path, "ec-p256")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    before = path.read_bytes()
    again = ensure_spare_key(path, "ec-p256")
    assert path.read_bytes() == before
    assert spki_pin(again.public_key()) == spki_pin(first.public_key())
    assert [p.name for p in path.parent.iterdir()] == ["site.example.pem"]  # no temp left


def test_spare_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spare.pem"
    ensure_spare_key(path, "ec-p256")
    with pytest.raises(InputError, match=r"spare\.pem: spare key is ec-p256, expected rsa-2048"):
        ensure_spare_key(path, "rsa-2048")


def test_spare_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spare.pem"
    ensure_spare_key(path, "ec-p256")
    os.chmod(path, 0o644)
    with pytest.raises(StoreError, match=r"spare\.pem: spare key has mode 0644"):
        ensure_spare_key(path, "ec-p256")


def test_garbage_spare_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spare.pem"
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(InputError, match=r"spare\.pem: not an unencrypted PEM private key"):
        ensure_spare_key(path, "ec-p256")


def test_unknown_key_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dsa-1024"):
        ensure_spare_key(tmp_path / "k.pem", "dsa-1024")
    assert not (tmp_path / "k.pem").exists()


@pytest.mark.parametrize("key_type", [t for t in KEY_TYPES if t not in ("rsa-3072", "rsa-4096")])
def test_generate_key_round_trips_key_type(key_type: str) -> None:
    assert key_type_of(generate_key(key_type)) == key_type
