"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

Inside a store no write goes through a symbolic link: a symlinked `archive/<site>/<ca>` (or
any other directory below the store root) could lead private keys out of the store, so every
path component below a registered store root is checked with lstat before writing.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ..errors import StoreError

#: store roots (absolute, as given) below which no write may go through a symlink; a Vault
#: registers its root, so every atomic_write under it is checked, whoever calls it
_STORE_ROOTS: set[Path] = set()


def register_store_root(root: Path) -> None:
    _STORE_ROOTS.add(Path(os.path.abspath(root)))


def _store_root_of(path: Path) -> Path | None:
    """The longest registered store root that `path` lies below."""
    found: Path | None = None
    for root in _STORE_ROOTS:
        if path != root and path.is_relative_to(root) and (
                found is None or len(root.parts) > len(found.parts)):
            found = root
    return found


def check_no_symlinks(path: Path, root: Path | None = None) -> None:
    """Refuse (StoreError naming it) a symlink among the components of `path` below `root`
    (default: the registered store root holding `path`; none: nothing to check). The root
    itself may be a symlink: it is the operator's choice of where the store lives."""
    path = Path(os.path.abspath(path))
    root = Path(os.path.abspath(root)) if root is not None else _store_root_of(path)
    if root is None or not path.is_relative_to(root):
        return
    cur = root
    for part in path.relative_to(root).parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return  # what does not exist yet is created as a real directory or file
        except OSError as exc:
            raise StoreError(f"{cur}: cannot inspect: {exc.strerror}") from exc
        if stat.S_ISLNK(st.st_mode):
            raise StoreError(
                f"{cur} is a symbolic link (to {os.readlink(cur)}); certfailover writes nothing "
                f"through a symlink inside the store {root} (key material could leave it): "
                "replace it with a real directory")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, root: Path | None = None) -> None:
    """Replace `path` with `data` so readers see the old or the new content, never a mix.

    The file is created with `mode` from the start (a private key is never briefly world-readable).
    Below a store root (`root`, or a registered one) no directory on the way may be a symlink.
    """
    path = Path(path)
    check_no_symlinks(path.parent, root)
    inside = root is not None or _store_root_of(Path(os.path.abspath(path))) is not None
    if inside and not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)  # private from the start
        os.chmod(path.parent, 0o700)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_symlink(target: str | Path, link: Path) -> None:
    """Point `link` at `target` in one rename (a symlink is replaced, never removed first).

    A real directory (or file) at `link` is refused, never replaced: it is not ours."""
    link = Path(link)
    check_no_symlinks(link.parent)
    link.parent.mkdir(parents=True, exist_ok=True)
    replace_symlink(target, link)
    fsync_dir(link.parent)


def replace_symlink(target: str | Path, link: str | Path) -> None:
    """The rename of atomic_symlink, without its check of the directories on the way and its
    fsync of the link's directory: a caller pointing many links in one directory checks that
    directory once, then fsyncs it once after the last link (Vault.point_live_many).

    A real directory (or file) at `link` is refused, never replaced: it is not ours."""
    link = os.fspath(link)
    try:
        st = os.lstat(link)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISLNK(st.st_mode):
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            raise StoreError(f"{link} is a real {kind}, not the symlink certfailover manages; "
                             "move it away (certfailover does not delete it)")
    head, name = os.path.split(link)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)
