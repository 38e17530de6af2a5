"""`files`: copy the active certificate material to fixed paths, for systems that watch files.

`paths` maps any of cert / key / chain / fullchain / combined to a destination path; a path
may contain `{site}` (required when one adapter serves several sites). Each file is written
atomically (temp file, fsync, rename); key and combined files are 0600. Several files cannot
change in one rename: a watcher may briefly see a new certificate with the old key. Prefer
`combined` (one file) or a live-symlink path where the consumer allows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ServerConfigError, ServerError
from ..store.files import atomic_write
from .base import LiveChange

__all__ = ["SOURCES", "FilesAdapter", "check_paths"]

# destination role -> (file in the vault's archive dir, mode)
SOURCES: Mapping[str, tuple[str, int]] = {
    "cert": ("cert.pem", 0o644),
    "chain": ("chain.pem", 0o644),
    "fullchain": ("fullchain.pem", 0o644),
    "combined": ("combined.pem", 0o600),
    "key": ("privkey.pem", 0o600),
}
_ORDER = ("cert", "chain", "fullchain", "combined", "key")


def check_paths(value: object) -> dict[str, str]:
    """Validate a `paths` table; ValueError names the bad key."""
    if not isinstance(value, Mapping) or not value:
        raise ValueError("'paths' must be a table with at least one of "
                         f"{', '.join(_ORDER)}")
    out: dict[str, str] = {}
    for role, path in value.items():
        if role not in SOURCES:
            raise ValueError(f"'paths.{role}' is not one of {', '.join(_ORDER)}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"'paths.{role}' must be a non-empty path string")
        try:
            path.format(site="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"'paths.{role}': only the placeholder {{site}} is allowed") from exc
        out[str(role)] = path
    return out


@dataclass(frozen=True)
class FilesAdapter:
    name: str
    paths: Mapping[str, str] = field(default_factory=dict)

    def destinations(self, site: str) -> dict[str, Path]:
        return {role: Path(p.format(site=site)) for role, p in self.paths.items()}

    def write(self, changes: Sequence[LiveChange]) -> None:
        if len({c.site for c in changes}) > 1 and not all("{site}" in p
                                                         for p in self.paths.values()):
            raise ServerConfigError(f"server {self.name!r}: several sites in one batch, but "
                                    "'paths' do not all contain {site}")
        for ch in changes:
            dest = self.destinations(ch.site)
            data: dict[str, bytes] = {}
            for role in dest:
                src = ch.target / SOURCES[role][0]
                try:
                    data[role] = src.read_bytes()
                except OSError as exc:
                    raise ServerConfigError(f"server {self.name!r}: cannot read {src}: "
                                            f"{exc.strerror}") from exc
            for role in _ORDER:
                if role in dest:
                    try:
                        atomic_write(dest[role], data[role], mode=SOURCES[role][1])
                    except OSError as exc:
                        raise ServerError(f"server {self.name!r}: cannot write {dest[role]} "
                                          f"({role}): {exc.strerror}") from exc

    def apply(self, changes: Sequence[LiveChange]) -> None:
        if changes:
            self.write(changes)
