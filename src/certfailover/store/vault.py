"""The vault: certificate material on disk.

    <root>/archive/<site>/<ca>/<serial>/   cert.pem chain.pem fullchain.pem privkey.pem (0600)
                                           combined.pem (fullchain + key, 0600, for HAProxy)
    <root>/live/<site>  ->  ../archive/<site>/<ca>/<serial>     one symlink, flipped atomically
    <root>/accounts/<ca>/account.key                             ACME account key (0600)

The store is private: directories are created 0700 and an existing store loses its "other"
permission bits at every write-mode open. Group bits are the operator's to grant (for a
consumer that reads `live/` as another user): new archive directories and files copy the
group read/search bits of `<root>/archive`, never more. Nothing is written through a symlink
below the root (store.files.check_no_symlinks).

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
from .files import atomic_symlink, check_no_symlinks, fsync_dir, register_store_root

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(value: str, what: str) -> str:
    if not SAFE_NAME.match(value):
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


def private(path: Path) -> None:
    """Remove the "other" permission bits of `path` (group bits stay the operator's)."""
    mode = os.stat(path).st_mode & 0o7777
    if mode & 0o007:
        os.chmod(path, mode & ~0o007)


class Vault:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        register_store_root(self.root)

    # -- layout -----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the layout (0700) and make an existing store private; StoreError names the
        path that cannot be created or changed (e.g. a read-only store)."""
        try:
            if not self.root.exists():
                self.root.mkdir(parents=True, mode=0o700)
                os.chmod(self.root, 0o700)  # mkdir's mode is masked by the umask
            private(self.root)
            for sub in ("archive", "live", "accounts"):
                path = self.root / sub
                check_no_symlinks(path, self.root)
                if not path.exists():
                    path.mkdir(mode=0o700)
                    os.chmod(path, 0o700)
                private(path)
            os.chmod(self.root / "accounts", 0o700)  # ACME account keys: never shared
        except OSError as exc:
            raise StoreError(f"{exc.filename or self.root}: cannot prepare the store: "
                             f"{exc.strerror}") from exc

    def check(self) -> None:
        """Read-only: the store must exist; nothing is created or changed."""
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: no certfailover store here (yet): `certfailover "
                             "issue`, `import` or `run` creates it")

    def live_path(self, site: str) -> Path:
        return self.root / "live" / safe_name(site, "site")

    def group_bits(self) -> int:
        """The group read/search bits the operator granted on <root>/archive (0: none)."""
        try:
            return os.stat(self.root / "archive").st_mode & 0o050
        except OSError:
            return 0

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
        # never through a symlink: archive/<site>/<ca> pointing elsewhere would take the key
        check_no_symlinks(final, self.root)
        if final.exists():
            return final
        group = self.group_bits()
        dirmode, filemode = 0o700 | group, 0o600 | (group & 0o040)
        for d in (final.parent.parent, final.parent):
            if not d.exists():
                d.mkdir(parents=True, mode=dirmode)
                os.chmod(d, dirmode)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{serial}.", suffix=".tmp"))
        try:
            fullchain = leaf_pem.rstrip(b"\n") + b"\n" + chain_pem if chain_pem else leaf_pem
            contents = {
                "cert.pem": (leaf_pem, filemode),
                "chain.pem": (chain_pem, filemode),
                "fullchain.pem": (fullchain, filemode),
                "privkey.pem": (key_pem, filemode),
                "combined.pem": (fullchain.rstrip(b"\n") + b"\n" + key_pem, filemode),
            }
            for name, (data, mode) in contents.items():
                fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
                os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, dirmode)
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
            if link.exists():
                raise StoreError(f"{link} is a real {'directory' if link.is_dir() else 'file'}, "
                                 "not the symlink certfailover manages; move it away "
                                 "(certfailover does not delete it)")
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
