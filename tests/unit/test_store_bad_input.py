"""A bad store gives a clear error naming the path and loses nothing.

Each row: the bad store (read-only, damaged database page, live/<site> a real directory,
archive/<site>/<ca> a symlink, a metrics port in use), the command through the real CLI entry,
its exit code, the path or address the message must name, and the store compared before and
after (certificates in the database, files in the archive, live link target).

The read-only store is a real read-only bind mount (root bypasses permission bits, not a
read-only mount): every write through it fails with EROFS, so a command that passes has
written nothing. Skipped where mounting is not allowed.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import config as config_mod
from certfailover import keys
from certfailover.cli.main import main
from certfailover.errors import CertFailoverError
from certfailover.metrics import ListenError, Metrics
from certfailover.model import CertState
from certfailover.testing import pki
from certfailover.wiring import Runtime, build
from certfailover_lab.sites import offline_config

PEM = Encoding.PEM
NOW = datetime.now(UTC)


# -- a small real store ------------------------------------------------------------------------

ROOT = pki.make_root("Root")


def write_config(tmp_path: Path) -> Path:
    return offline_config(tmp_path, pki.write_bundle(tmp_path / "roots.pem", ROOT), port=1)


def runtime_for(cfg: Path) -> Runtime:
    return build(config_mod.load(cfg))


def populated(tmp_path: Path) -> tuple[Path, Path]:
    """A store with an active certificate from CA a (live link set), a standby from CA b,
    events and a spare key; every connection closed (no -wal/-shm left)."""
    cfg = write_config(tmp_path)
    rt = runtime_for(cfg)
    ids = []
    for ca in ("a", "b"):
        leaf, key = pki.make_leaf(ROOT, ["www.example.test"], not_before=NOW - timedelta(hours=1))
        cert = rt.engine.store_cert(rt.config.site("www"), ca, leaf_pem=leaf.public_bytes(PEM),
                                    chain_pem=b"", key_pem=keys.key_pem(key), source=f"test {ca}")
        ids.append(cert)
    rt.db.set_active("www", ids[0].id)
    rt.vault.point_live("www", Path(ids[0].path))
    for i in range(300):  # enough rows for a database of many pages
        rt.engine.record(None, "www", "note", f"event {i} " + "x" * 200)
    from certfailover.pins import site_pins
    site_pins(rt.db, rt.vault, rt.config.site("www"))  # creates the spare key
    rt.db.engine.dispose()
    return cfg, tmp_path / "store"


def snapshot(store: Path) -> dict[str, Any]:
    """What must not change: certificates (id -> state) in the database, every file under the
    archive (and its content hash), the live link target, the database file's bytes."""
    files = {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((store / "archive").rglob("*")) if p.is_file()}
    live = store / "live" / "www"
    db = store / "state.db"
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        certs = dict(conn.execute("SELECT id, state FROM certs").fetchall())
    except sqlite3.OperationalError:  # read-only mount without -wal/-shm
        conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
        certs = dict(conn.execute("SELECT id, state FROM certs").fetchall())
    conn.close()
    return {"certs": certs, "files": files,
            "live": os.readlink(live) if live.is_symlink() else None}


def db_bytes(store: Path) -> str:
    return hashlib.sha256((store / "state.db").read_bytes()).hexdigest()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


# -- read-only store -------------------------------------------------------------------------

@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    cfg, store = populated(tmp_path)
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    if subprocess.run(["mount", "--bind", str(store), str(store)], capture_output=True, check=False).returncode:
        pytest.skip("mount --bind is not allowed here")
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", str(store)], capture_output=True, check=False)
        if r.returncode:
            pytest.skip(f"read-only remount is not allowed here: {r.stderr!r}")
        yield cfg, store
    finally:
        subprocess.run(["umount", "--lazy", str(store)], check=True)


def assert_really_read_only(store: Path) -> None:
    with pytest.raises(OSError) as info:
        (store / "probe").write_bytes(b"x")
    assert info.value.errno == 30, "EROFS: even root cannot write it"


@pytest.mark.parametrize("wal_open", [False, True], ids=["closed", "daemon-connected"])
@pytest.mark.parametrize(("argv", "want"), [
    (["status"], "www"),
    (["--json", "status"], '"site": "www"'),
    (["events", "--site", "www"], "event 299"),
    (["pins", "www"], "spare"),
])
def test_read_only_store_serves_read_commands(
        read_only: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: list[str],
        want: str, wal_open: bool, tmp_path: Path) -> None:
    cfg, store = read_only
    assert_really_read_only(store)
    before, raw = snapshot(store), db_bytes(store)
    conn = None
    if wal_open:  # a running daemon keeps -wal/-shm: opened below the read-only mount
        subprocess.run(["umount", "--lazy", str(store)], check=True)
        conn = sqlite3.connect(store / "state.db")
        conn.execute("SELECT count(*) FROM certs").fetchall()
        subprocess.run(["mount", "--bind", str(store), str(store)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(store)], check=True)
        assert (store / "state.db-shm").exists()
    try:
        code, out, err = run(capsys, "--config", str(cfg), *argv)
    finally:
        if conn is not None:
            conn.close()
    assert code == 0, err
    assert want in out
    assert snapshot(store) == before and db_bytes(store) == raw


@pytest.mark.parametrize(("argv", "code"), [
    (["check"], 3),  # a monitoring plugin: UNKNOWN
    (["import", "www", "--ca", "b", "--cert", "CERT", "--key", "KEY"], 2),
    (["remove", "www/b/1"], 2),
])
def test_read_only_store_refuses_writers_naming_the_store(
        read_only: tuple[Path, Path], capsys: pytest.CaptureFixture[str], argv: list[str],
        code: int, tmp_path: Path) -> None:
    cfg, store = read_only
    before = snapshot(store)
    leaf, key = pki.make_leaf(pki.make_root("R2"), ["www.example.test"])
    (tmp_path / "c.pem").write_bytes(leaf.public_bytes(PEM))
    (tmp_path / "k.pem").write_bytes(keys.key_pem(key))
    argv = [str(tmp_path / "c.pem") if a == "CERT" else str(tmp_path / "k.pem") if a == "KEY"
            else a for a in argv]
    got, out, err = run(capsys, "--config", str(cfg), *argv)
    assert got == code
    message = out + err
    assert str(store) in message and "Read-only file system" in message
    assert snapshot(store) == before


def test_read_only_store_with_an_old_schema_says_it_cannot_upgrade(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, store = populated(tmp_path)
    with sqlite3.connect(store / "state.db") as conn:
        conn.execute("UPDATE schema_version SET version = 2")  # as before migration 3
        schema_2 = {"certs", "findings", "events", "distrust", "schema_version"}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                     " AND name NOT LIKE 'sqlite_%'").fetchall():
            if table not in schema_2:  # every table a later migration creates
                conn.execute(f"DROP TABLE {table}")
        conn.execute("DROP INDEX ix_certs_changed")  # and the column schema 10 adds to certs
        conn.execute("ALTER TABLE certs DROP COLUMN changed")
    conn.close()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(store), str(store)],
                                           capture_output=True, check=False).returncode:
        pytest.skip("mount --bind is not allowed here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(store)], check=True)
        code, _, err = run(capsys, "--config", str(cfg), "status")
    finally:
        subprocess.run(["umount", "--lazy", str(store)], check=True)
    assert code == 2
    assert str(store / "state.db") in err and "schema version 2 is older" in err
    # writable again: a read command upgrades the old store in place
    code, _, err = run(capsys, "--config", str(cfg), "status")
    assert code == 0, err


# -- damaged database, live directory, archive symlink ----------------------------------------

def corrupt_middle_page(db: Path) -> None:
    size = db.stat().st_size
    assert size > 16 * 4096, "many pages"
    with db.open("r+b") as fh:
        fh.seek((size // 4096 // 2) * 4096)
        fh.write(os.urandom(4096))


@pytest.mark.parametrize("argv", [["status"], ["events"], ["pins", "www"], ["check"],
                                  ["run", "--once"], ["remove", "www/b/1"]])
def test_damaged_database_page_is_named_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    cfg, store = populated(tmp_path)
    corrupt_middle_page(store / "state.db")
    def files() -> list[str]:  # SQLite's own -wal/-shm of a reader are checked below
        return sorted(str(p) for p in store.rglob("*")
                      if p.name not in ("daemon.lock", "state.db-wal", "state.db-shm"))
    before = files()
    raw = db_bytes(store)
    code, out, err = run(capsys, "--config", str(cfg), *argv)
    assert code == (3 if argv == ["check"] else 2)
    message = out + err
    assert f"{store / 'state.db'}: the database is damaged" in message
    assert "archive are not affected" in message
    assert db_bytes(store) == raw and files() == before
    wal = store / "state.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "nothing was written"


def test_live_directory_is_named_not_replaced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, store = populated(tmp_path)
    live = store / "live" / "www"
    live.unlink()
    live.mkdir()
    (live / "fullchain.pem").write_bytes(b"the operator's own file")
    before = snapshot(store)
    code, out, _ = run(capsys, "--config", str(cfg), "status")  # shown, not fatal
    assert code == 0 and f"{live} is a real directory" in out
    code, _, err = run(capsys, "--config", str(cfg), "run", "--once")  # startup reconcile
    assert code == 2 and f"{live} is a real directory" in err, err
    assert (live / "fullchain.pem").read_bytes() == b"the operator's own file"
    # a switch: the engine records the deploy failure (and logs it with its traceback: the
    # engine's choice for any deploy exception); the directory is never replaced
    code = main(["--config", str(cfg), "failover", "www"])
    res = capsys.readouterr()
    assert code == 1 and f"{live} is a real directory" in res.out + res.err
    assert (live / "fullchain.pem").read_bytes() == b"the operator's own file"
    after = snapshot(store)
    assert after["files"] == before["files"] and after["live"] is None


def test_archive_symlink_never_receives_key_material(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    store = tmp_path / "store"
    runtime_for(cfg).db.engine.dispose()  # the store exists
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (store / "archive" / "www").mkdir()
    (store / "archive" / "www" / "b").symlink_to(outside)
    leaf, key = pki.make_leaf(pki.make_root("R"), ["www.example.test"])
    (tmp_path / "c.pem").write_bytes(leaf.public_bytes(PEM))
    (tmp_path / "k.pem").write_bytes(keys.key_pem(key))
    code, _, err = run(capsys, "--config", str(cfg), "import", "www", "--ca", "b",
                       "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem"))
    assert code == 2
    assert f"{store / 'archive' / 'www' / 'b'} is a symbolic link (to {outside})" in err
    assert list(outside.iterdir()) == [], "no key left the store"
    assert snapshot(store)["certs"] == {}


def test_spare_key_never_written_through_a_symlink(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    store = tmp_path / "store"
    runtime_for(cfg).db.engine.dispose()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (store / "spare").symlink_to(outside)
    code, _, err = run(capsys, "--config", str(cfg), "pins", "www")
    assert code == 2 and f"{store / 'spare'} is a symbolic link" in err
    assert list(outside.iterdir()) == []


# -- permissions -------------------------------------------------------------------------------

def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_new_store_is_private(tmp_path: Path) -> None:
    cfg, store = populated(tmp_path)
    rt = runtime_for(cfg)  # an open connection: -wal and -shm exist
    rt.db.certs()
    assert mode(store) == 0o700
    for sub in ("archive", "live", "accounts", "spare", "archive/www", "archive/www/a"):
        assert mode(store / sub) == 0o700, sub
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        assert mode(store / name) == 0o600, name
    for f in (store / "archive" / "www").rglob("*.pem"):
        assert mode(f) == 0o600, f
    for d in (store / "archive" / "www").glob("*/*"):
        assert mode(d) == 0o700, d
    rt.db.engine.dispose()


def test_existing_open_store_is_tightened_and_group_access_kept(tmp_path: Path) -> None:
    cfg, store = populated(tmp_path)
    os.chmod(store, 0o755)
    os.chmod(store / "live", 0o755)
    os.chmod(store / "archive", 0o750)  # the operator's choice: a web server's group
    os.chmod(store / "state.db", 0o644)
    rt = runtime_for(cfg)  # a write-mode open: "other" bits go, group bits stay
    assert mode(store) == 0o750 and mode(store / "live") == 0o750
    assert mode(store / "archive") == 0o750 and mode(store / "state.db") == 0o600
    # new archive entries copy the archive's group bits: the group can read through live/
    leaf, key = pki.make_leaf(pki.make_root("G"), ["www.example.test"])
    cert = rt.engine.store_cert(rt.config.site("www"), "b", leaf_pem=leaf.public_bytes(PEM),
                                chain_pem=b"", key_pem=keys.key_pem(key), source="t")
    assert mode(Path(cert.path)) == 0o750 and mode(Path(cert.path) / "privkey.pem") == 0o640
    rt.db.engine.dispose()


# -- metrics port in use -----------------------------------------------------------------------

def test_metrics_port_in_use_is_named_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "--config", str(cfg), "run", "--once",
                           "--metrics-listen", f"127.0.0.1:{port}")
        assert code == 2
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
        assert not (tmp_path / "store").exists(), "refused before the store was touched"
        with pytest.raises(ListenError, match=f"127.0.0.1:{port}") as info:
            Metrics().serve("127.0.0.1", port)
        assert isinstance(info.value, CertFailoverError) and isinstance(info.value, OSError)


def test_standby_state_is_unchanged_by_refusals(tmp_path: Path) -> None:
    """The fixture itself: an active a, a standby b."""
    _, store = populated(tmp_path)
    states = sorted(snapshot(store)["certs"].values())
    assert states == [CertState.ACTIVE.value, CertState.STANDBY.value]
