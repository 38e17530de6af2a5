"""`import` and `remove` with bad input, through the real CLI entry, lab-free.

Each row: the input, the exit code, what the message must name (file, certificate id, key),
and the store compared before and after: certificates in the database (id -> state), every
file in the archive (content hashes), the live link target. A refused command leaves the
store exactly as it was; `--force` stores with a warning; `remove` keeps the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from certfailover import config as config_mod
from certfailover import keys
from certfailover.cli.main import main
from certfailover.wiring import build
from certfailover_lab import pki
from certfailover_lab.sites import offline_config

pytestmark = pytest.mark.integration
PEM = Encoding.PEM
NOW = datetime.now(UTC)
ROOT = pki.make_root("Import Root")
NAME = "www.example.test"


def self_signed(domains: list[str]) -> tuple[x509.Certificate, PrivateKeyTypes]:
    key = keys.generate("ec-p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
                           critical=False)
            .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert, key


@dataclass
class Store:
    cfg: Path
    root: Path
    active: str
    standby: str

    def snapshot(self) -> dict[str, Any]:
        files = {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted((self.root / "archive").rglob("*")) if p.is_file()}
        live = self.root / "live" / "www"
        with sqlite3.connect(f"file:{self.root / 'state.db'}?mode=ro", uri=True) as conn:
            certs = dict(conn.execute("SELECT id, state FROM certs").fetchall())
        conn.close()
        return {"certs": certs, "files": files,
                "live": os.readlink(live) if live.is_symlink() else None}

    def events(self) -> list[tuple[str, str]]:
        with sqlite3.connect(f"file:{self.root / 'state.db'}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT kind, message FROM events ORDER BY id").fetchall()
        conn.close()
        return [(str(k), str(m)) for k, m in rows]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Site www (ec-p256) with an active certificate from CA a and a standby from CA b."""
    bundle = pki.write_bundle(tmp_path / "roots.pem", ROOT)
    cfg = offline_config(tmp_path, bundle, cas=("a", "b", "c"), domains=(NAME,), port=1,
                         extra='key_type = "ec-p256"\n')
    rt = build(config_mod.load(cfg))
    made = []
    for ca in ("a", "b"):
        leaf, key = pki.make_leaf(ROOT, [NAME], not_before=NOW - timedelta(hours=1))
        made.append(rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=leaf.public_bytes(PEM),
                                         chain_pem=b"", key_pem=keys.key_pem(key), source=ca))
    rt.db.set_active("www", made[0].id)
    rt.vault.point_live("www", Path(made[0].path))
    rt.db.engine.dispose()
    return Store(cfg, tmp_path / "store", made[0].id, made[1].id)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


# -- import ------------------------------------------------------------------------------------

Maker = Callable[[], tuple[x509.Certificate, PrivateKeyTypes]]
IMPORTS: dict[str, tuple[Maker, str, str]] = {
    # name: (certificate and key, the file the message names, the reason)
    "expired": (lambda: pki.make_leaf(ROOT, [NAME], not_before=NOW - timedelta(days=100),
                                      not_after=NOW - timedelta(days=10)),
                "cert.pem", "the certificate expired on"),
    "not-yet-valid": (lambda: pki.make_leaf(ROOT, [NAME], not_before=NOW + timedelta(days=3)),
                      "cert.pem", "the certificate is not valid before"),
    "self-signed": (lambda: self_signed([NAME]), "cert.pem", "the certificate is self-signed"),
    "wrong-key-type": (lambda: pki.make_leaf(ROOT, [NAME], key_type="rsa-2048"),
                       "key.pem", "the key is rsa-2048, site 'www' uses key_type ec-p256"),
}


def write_input(tmp_path: Path, maker: Maker) -> tuple[Path, Path, x509.Certificate]:
    leaf, key = maker()
    (tmp_path / "cert.pem").write_bytes(leaf.public_bytes(PEM))
    (tmp_path / "key.pem").write_bytes(keys.key_pem(key))
    return tmp_path / "cert.pem", tmp_path / "key.pem", leaf


@pytest.mark.parametrize("case", list(IMPORTS))
def test_import_refuses_bad_certificate_and_changes_nothing(
        store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    maker, named, reason = IMPORTS[case]
    cert, key, _ = write_input(tmp_path, maker)
    before, events = store.snapshot(), store.events()
    code, out, err = run(capsys, "--config", str(store.cfg), "import", "www", "--ca", "c",
                         "--cert", str(cert), "--key", str(key))
    assert code == 2 and out == ""
    assert f"{tmp_path / named}: {reason}" in err and "nothing was stored" in err
    assert store.snapshot() == before and store.events() == events
    assert not (store.root / "archive" / "www" / "c").exists()


@pytest.mark.parametrize("case", list(IMPORTS))
def test_import_with_force_stores_with_a_warning(
        store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    maker, named, reason = IMPORTS[case]
    cert, key, leaf = write_input(tmp_path, maker)
    before = store.snapshot()
    code, out, err = run(capsys, "--config", str(store.cfg), "--json", "import", "www",
                         "--ca", "c", "--cert", str(cert), "--key", str(key), "--force")
    assert code == 0, err
    assert f"warning: {tmp_path / named}: {reason}" in err and "--force" in err
    data = json.loads(out)
    new_id = data["id"]
    assert data["ca"] == "c" and data["state"] == "standby"
    assert any(reason in w for w in data["warnings"])
    after = store.snapshot()
    assert after["certs"] == {**before["certs"], new_id: "standby"}
    assert after["live"] == before["live"], "a forced import is a standby, never served at once"
    assert {k: v for k, v in after["files"].items() if k in before["files"]} == before["files"]
    assert f"archive/www/c/{format(leaf.serial_number, 'x')}/privkey.pem" in after["files"]
    kind, message = store.events()[-1]
    assert kind == "imported" and reason in message


def test_import_of_a_good_certificate_prints_no_warning(
        store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key, _ = write_input(tmp_path, lambda: pki.make_leaf(ROOT, [NAME]))
    code, out, err = run(capsys, "--config", str(store.cfg), "import", "www", "--ca", "c",
                         "--cert", str(cert), "--key", str(key))
    assert code == 0 and "warning" not in err and "as a standby" in out


# -- remove ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("which", "code", "names"), [
    ("active", 2, ["is the active certificate of site 'www'", "fail over first",
                   "certfailover failover www"]),
    ("unknown", 2, ["no certificate 'www/nope/1'"]),
])
def test_remove_refuses_and_changes_nothing(
        store: Store, capsys: pytest.CaptureFixture[str], which: str, code: int,
        names: list[str]) -> None:
    cert_id = store.active if which == "active" else "www/nope/1"
    before, events = store.snapshot(), store.events()
    got, out, err = run(capsys, "--config", str(store.cfg), "remove", cert_id)
    assert got == code and out == ""
    assert cert_id in err
    for text in names:
        assert text in err
    assert store.snapshot() == before and store.events() == events


def test_remove_retires_a_standby_and_keeps_its_files(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    before = store.snapshot()
    code, out, err = run(capsys, "--config", str(store.cfg), "--json", "remove", store.standby)
    assert code == 0, err
    data = json.loads(out)
    assert data["removed"] == store.standby and data["files_kept"] is True
    assert data["previous_state"] == "standby" and data["already"] is False
    after = store.snapshot()
    assert after["certs"] == {**before["certs"], store.standby: "retired"}
    assert after["files"] == before["files"], "key material is never deleted"
    assert after["live"] == before["live"]
    kind, message = store.events()[-1]
    assert kind == "removed" and store.standby in message and data["path"] in message
    # again: nothing more to do, said so
    code, out, _ = run(capsys, "--config", str(store.cfg), "remove", store.standby)
    assert code == 0 and "already retired" in out
    assert store.events()[-1] == (kind, message)
    # the text output says where the files stay
    code, out, _ = run(capsys, "--config", str(store.cfg), "--json", "status")
    assert store.standby not in out, "a retired certificate is not listed"


def test_remove_text_output_names_the_kept_files(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--config", str(store.cfg), "remove", store.standby)
    assert code == 0
    assert "never deletes key material" in out and str(store.root / "archive") in out


def test_removed_event_kind_is_info() -> None:
    from certfailover.notify.base import event_severity
    assert event_severity("removed") == "info"
