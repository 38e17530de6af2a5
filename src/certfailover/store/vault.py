"""The vault: certificate material on disk.

    <root>/archive/<site>/<ca>/<serial>/   cert.pem chain.pem fullchain.pem privkey.pem (0600)
                                           combined.pem (fullchain + key, 0600, for HAProxy)
                                           chains/<i>/ (i >= 1) the same five files with the
                                           CA's alternate chain i (same leaf, same key)
    <root>/live/<site>  ->  ../archive/<site>/<ca>/<serial>     one symlink, flipped atomically
                            (or ->  .../<serial>/chains/<i>: that chain is served)
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..errors import InputError, StoreError
from .files import check_no_symlinks, fsync_dir, register_store_root, replace_symlink

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def safe_name(value: str, what: str) -> str:
    if not SAFE_NAME.match(value):
        raise StoreError(f"{what} {value!r} is not a safe file name (letters, digits, . _ -)")
    return value


CHAINS = "chains"  # the archive sub-directory of the alternate chains


@dataclass(frozen=True)
class Material:
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # the chain of the directory loaded
    key: PrivateKeyTypes
    chains: tuple[tuple[x509.Certificate, ...], ...] = ()  # every stored chain, index order

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Every certificate of every stored chain, once (chain 0's first): what lets a
        verifier build each path the CA offers."""
        out: list[x509.Certificate] = []
        for chain in self.chains or (self.chain,):
            out += [c for c in chain if c not in out]
        return tuple(out)


def base_dir(directory: Path) -> Path:
    """The certificate's archive directory of `directory` (itself, or the one holding the
    chain directory `directory`)."""
    directory = Path(directory)
    if directory.parent.name == CHAINS and directory.name.isdigit():
        return directory.parent.parent
    return directory


def chain_dir(directory: Path, index: int) -> Path:
    """The directory that serves chain `index` of the certificate in `directory`."""
    base = base_dir(directory)
    return base if index == 0 else base / CHAINS / str(index)


def chain_dirs(directory: Path) -> list[Path]:
    """Every chain directory of the certificate in `directory`, index order (0: itself)."""
    base = base_dir(directory)
    alt = base / CHAINS
    extra = sorted(int(p.name) for p in alt.iterdir() if p.name.isdigit()) if alt.is_dir() else []
    return [base, *(alt / str(i) for i in extra)]


def chain_index(directory: Path, served: Path | None) -> int | None:
    """Which chain of the certificate in `directory` `served` (a live target) is, or None
    when it is another certificate."""
    if served is None:
        return None
    base = base_dir(directory).resolve()
    served = Path(served).resolve()
    if served == base:
        return 0
    if served.parent.name == CHAINS and served.parent.parent == base and served.name.isdigit():
        return int(served.name)
    return None


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
                self.root.mkdir(parents=True, mode=0o700, exist_ok=True)
                os.chmod(self.root, 0o700)  # mkdir's mode is masked by the umask
            private(self.root)
            for sub in ("archive", "live", "accounts"):
                path = self.root / sub
                check_no_symlinks(path, self.root)
                if not path.exists():
                    path.mkdir(mode=0o700, exist_ok=True)
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
             key_pem: bytes, alt_chains_pem: Sequence[bytes] = ()) -> Path:
        """Write one certificate's directory atomically; returns its path. `alt_chains_pem`:
        the CA's other chains (intermediates, PEM), written to chains/1, chains/2, ... in the
        same temporary directory, so they exist exactly when the certificate does."""
        final = self.archive_dir(site, ca, serial)
        # never through a symlink: archive/<site>/<ca> pointing elsewhere would take the key
        check_no_symlinks(final, self.root)
        if final.exists():
            return final
        group = self.group_bits()
        dirmode, filemode = 0o700 | group, 0o600 | (group & 0o040)
        for d in (final.parent.parent, final.parent):
            if not d.exists():  # two orders of a site at once may both get here: exist_ok
                d.mkdir(parents=True, mode=dirmode, exist_ok=True)
                os.chmod(d, dirmode)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{serial}.", suffix=".tmp"))
        try:
            _write_files(tmp, leaf_pem, chain_pem, key_pem, filemode)
            if alt_chains_pem:
                (tmp / CHAINS).mkdir(mode=dirmode)
                os.chmod(tmp / CHAINS, dirmode)
                for i, alt in enumerate(alt_chains_pem, start=1):
                    sub = tmp / CHAINS / str(i)
                    sub.mkdir(mode=dirmode)
                    os.chmod(sub, dirmode)
                    _write_files(sub, leaf_pem, alt, key_pem, filemode)
                    fsync_dir(sub)
                fsync_dir(tmp / CHAINS)
            os.chmod(tmp, dirmode)
            fsync_dir(tmp)
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def add_chain(self, directory: Path, chain_pem: bytes) -> Path:
        """Add one more chain to a stored certificate (e.g. one completed from AIA): written
        whole under a temporary name, renamed to the next free chains/<i>; returns it."""
        base = base_dir(directory)
        check_no_symlinks(base, self.root)
        leaf_pem, key_pem = (base / "cert.pem").read_bytes(), (base / "privkey.pem").read_bytes()
        group = self.group_bits()
        dirmode, filemode = 0o700 | group, 0o600 | (group & 0o040)
        alt = base / CHAINS
        if not alt.exists():
            alt.mkdir(mode=dirmode, exist_ok=True)
            os.chmod(alt, dirmode)
        tmp = Path(tempfile.mkdtemp(dir=alt, prefix=".chain.", suffix=".tmp"))
        try:
            _write_files(tmp, leaf_pem, chain_pem, key_pem, filemode)
            os.chmod(tmp, dirmode)
            fsync_dir(tmp)
            index = len(chain_dirs(base))
            final = alt / str(index)
            os.rename(tmp, final)
            fsync_dir(alt)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def point_live(self, site: str, target: Path) -> None:
        """Make live/<site> point at `target` (an archive directory) in one atomic rename."""
        self.point_live_many([(site, target)])

    def point_live_many(self, links: Sequence[tuple[str, Path]]) -> None:
        """point_live for many sites: each live/<site> -> its target in one atomic rename, with
        the same checks (complete certificate directory, no symlinked live/, no real file or
        directory replaced), then ONE fsync of live/ after the last rename, also when one fails
        part-way (what was renamed is made durable, then the error is raised)."""
        if not links:
            return
        live = self.root / "live"
        check_no_symlinks(live)
        live.mkdir(parents=True, exist_ok=True)
        try:
            for site, target in links:
                t = os.fspath(target)
                if not os.path.isfile(os.path.join(t, "fullchain.pem")) or \
                        not os.path.isfile(os.path.join(t, "privkey.pem")):
                    raise StoreError(f"{target}: not a complete certificate directory")
                link = self.live_path(site)
                replace_symlink(os.path.relpath(t, live), link)
        finally:
            fsync_dir(live)

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
        chain = _chain(chain_data, directory / "chain.pem")
        return Material(leaf=leaf, chain=chain, key=load_key(key_data, str(directory / "privkey.pem")),
                        chains=self.load_chains(directory))

    def load_chains(self, directory: Path) -> tuple[tuple[x509.Certificate, ...], ...]:
        """Every stored chain (intermediates) of the certificate in `directory`, index order."""
        out = []
        for d in chain_dirs(directory):
            try:
                data = (d / "chain.pem").read_bytes()
            except OSError as exc:
                raise StoreError(f"{d}: cannot read chain: {exc}") from exc
            out.append(_chain(data, d / "chain.pem"))
        return tuple(out)


def _chain(data: bytes, path: Path) -> tuple[x509.Certificate, ...]:
    return tuple(load_pem_certs(data, str(path))) if data.strip() else ()


def _write_files(directory: Path, leaf_pem: bytes, chain_pem: bytes, key_pem: bytes,
                 filemode: int) -> None:
    """The five files of one served chain, each with exactly `filemode`, fsynced."""
    fullchain = leaf_pem.rstrip(b"\n") + b"\n" + chain_pem if chain_pem else leaf_pem
    contents = {
        "cert.pem": leaf_pem,
        "chain.pem": chain_pem,
        "fullchain.pem": fullchain,
        "privkey.pem": key_pem,
        "combined.pem": fullchain.rstrip(b"\n") + b"\n" + key_pem,
    }
    for name, data in contents.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, filemode)
        os.fchmod(fd, filemode)  # exactly `filemode`, whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
