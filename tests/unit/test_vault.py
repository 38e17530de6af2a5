from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from certfailover import keys
from certfailover.errors import StoreError
from certfailover.store import files
from certfailover.store.vault import Vault
from certfailover.testing import pki


def _material(domain: str = "www.example.test") -> tuple[bytes, bytes, bytes]:
    root = pki.make_root("Test Root")
    inter = pki.make_intermediate(root, "Test Intermediate")
    leaf, key = pki.make_leaf(inter, [domain])
    from cryptography.hazmat.primitives.serialization import Encoding
    return leaf.public_bytes(Encoding.PEM), inter.pem, keys.key_pem(key)


def test_save_writes_complete_directory_with_private_key_0600(tmp_path: Path) -> None:
    v = Vault(tmp_path)
    v.ensure()
    leaf, chain, key = _material()
    d = v.save("www", "a", "01ab", leaf_pem=leaf, chain_pem=chain, key_pem=key)
    assert d == tmp_path / "archive" / "www" / "a" / "01ab"
    assert (d / "fullchain.pem").read_bytes().startswith(leaf.rstrip(b"\n"))
    assert (d / "fullchain.pem").read_bytes().endswith(chain)
    for name in ("privkey.pem", "combined.pem"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    m = v.load(d)
    assert keys.same_public_key(m.key.public_key(), m.leaf.public_key())
    assert len(m.chain) == 1
    # no temporary leftovers
    assert [p.name for p in d.parent.iterdir()] == ["01ab"]


def test_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v = Vault(tmp_path)
    leaf, chain, key = _material()
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        v.save("www", "a", "02", leaf_pem=leaf, chain_pem=chain, key_pem=key)
    assert not (tmp_path / "archive" / "www" / "a" / "02").exists()
    assert list((tmp_path / "archive" / "www" / "a").iterdir()) == []


def test_live_link_flips_atomically_and_refuses_incomplete_targets(tmp_path: Path) -> None:
    v = Vault(tmp_path)
    v.ensure()
    one = v.save("www", "a", "01", leaf_pem=_material()[0], chain_pem=b"", key_pem=_material()[2])
    two = v.save("www", "b", "02", leaf_pem=_material()[0], chain_pem=b"", key_pem=_material()[2])
    v.point_live("www", one)
    assert v.live_target("www") == one.resolve()
    v.point_live("www", two)
    assert v.live_target("www") == two.resolve()
    assert os.readlink(v.live_path("www")) == "../archive/www/b/02", "relative link survives moves"
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a complete certificate directory"):
        v.point_live("www", tmp_path / "empty")
    assert v.live_target("www") == two.resolve()


def test_unsafe_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a safe file name"):
        Vault(tmp_path).archive_dir("../x", "a", "01")


def test_atomic_write_replaces_whole_file_with_mode(tmp_path: Path) -> None:
    p = tmp_path / "k.pem"
    files.atomic_write(p, b"old", mode=0o600)
    files.atomic_write(p, b"new", mode=0o600)
    assert p.read_bytes() == b"new"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in tmp_path.iterdir()] == ["k.pem"]


def test_two_orders_of_a_new_site_save_at_once(tmp_path: Path) -> None:
    """Orders to two CAs for a site run in parallel workers: both may find archive/<site>
    missing and create it; neither may fail (seen: "[Errno 17] File exists" lost a
    certificate a CA had just issued)."""
    import threading

    def save(vault: Vault, ca: str, start: threading.Barrier,
             errors: list[BaseException]) -> None:
        leaf, chain, key = _material()
        start.wait()
        try:
            vault.save("www", ca, "1f", leaf_pem=leaf, chain_pem=chain, key_pem=key)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    for round_ in range(20):
        vault = Vault(tmp_path / f"store{round_}")
        vault.ensure()
        start = threading.Barrier(4)
        errors: list[BaseException] = []
        threads = [threading.Thread(target=save, args=(vault, f"ca{i}", start, errors))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(p.name for p in (tmp_path / f"store{round_}" / "archive" / "www").iterdir()) \
            == ["ca0", "ca1", "ca2", "ca3"]
