"""The vault: certificate material on disk.

    <root>/archive/<site>/<ca>/<serial>/   cert.pem chain.pem fullchain.pem privkey.pem (0600)
                                           combined.pem (fullchain + key, 0600, for HAProxy)
    <root>/live/<site>  ->  ../archive/<site>/<ca>/<serial>     one symlink, flipped atomically
    <root>/accounts/<ca>/account.key                             ACME account key (0600)

An archive directory is written completely under a temporary name and renamed into place,
so it either exists whole or not at all. The live symlink is replaced with one rename, so the
certificate and key a server reads through it always belong together.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..errors import InputError, StoreError
from .files import atomic_symlink, fsync_dir

FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem", "combined.pem")
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(value: str, what: str) -> str:
    if not _SAFE.match(value):
        raise StoreError(f"{what} {value!r} is not a safe file name (letters, digits, . _ -)")
    return value


@dataclass(frozen=True)
class Material:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes


def load_pem_certs(data: bytes, source: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InputError(f"{source}: not a PEM certificate list: {exc}") from exc
    return certs


def load_key(data: bytes, source: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{source}: not an unencrypted PEM private key: {exc}") from exc


class Vault:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- layout -----------------------------------------------------------------------------
    def ensure(self) -> None:
        for sub in ("archive", "live", "accounts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "archive", 0o700)
        os.chmod(self.root / "accounts", 0o700)

    def live_path(self, site: str) -> Path:
        return self.root / "live" / safe_name(site, "site")

    def account_key_path(self, ca: str) -> Path:
        return self.root / "accounts" / safe_name(ca, "ca") / "account.key"

    def archive_dir(self, site: str, ca: str, serial: str) -> Path:
        return (
            self.root / "archive" / safe_name(site, "site") / safe_name(ca, "ca")
            / safe_name(serial, "serial")
        )

    # -- writes -----------------------------------------------------------------------------
    def save(self, site: str, ca: str, serial: str, *, leaf_pem: bytes, chain_pem: bytes,
             key_pem: bytes) -> Path:
        """Write one certificate's directory atomically; returns its path."""
        final = self.archive_dir(site, ca, serial)
        if final.exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{serial}.", suffix=".tmp"))
        try:
            fullchain = leaf_pem.rstrip(b"\n") + b"\n" + chain_pem if chain_pem else leaf_pem
            contents = {
                "cert.pem": (leaf_pem, 0o644),
                "chain.pem": (chain_pem, 0o644),
                "fullchain.pem": (fullchain, 0o644),
                "privkey.pem": (key_pem, 0o600),
                "combined.pem": (fullchain.rstrip(b"\n") + b"\n" + key_pem, 0o600),
            }
            for name, (data, mode) in contents.items():
                fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o755)
            fsync_dir(tmp)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def point_live(self, site: str, target: Path) -> None:
        """Make live/<site> point at `target` (an archive directory) in one atomic rename."""
        target = Path(target)
        if not (target / "fullchain.pem").is_file() or not (target / "privkey.pem").is_file():
            raise StoreError(f"{target}: not a complete certificate directory")
        link = self.live_path(site)
        rel = os.path.relpath(target, link.parent)
        atomic_symlink(rel, link)

    # -- reads ------------------------------------------------------------------------------
    def live_target(self, site: str) -> Path | None:
        link = self.live_path(site)
        if not link.is_symlink():
            return None
        return (link.parent / os.readlink(link)).resolve()

    def load(self, directory: Path) -> Material:
        directory = Path(directory)
        try:
            leaf_data = (directory / "cert.pem").read_bytes()
            chain_data = (directory / "chain.pem").read_bytes()
            key_data = (directory / "privkey.pem").read_bytes()
        except OSError as exc:
            raise StoreError(f"{directory}: cannot read certificate material: {exc}") from exc
        leaf = load_pem_certs(leaf_data, str(directory / "cert.pem"))[0]
        chain = tuple(load_pem_certs(chain_data, str(directory / "chain.pem"))) if chain_data.strip() else ()
        return Material(leaf=leaf, chain=chain, key=load_key(key_data, str(directory / "privkey.pem")))
