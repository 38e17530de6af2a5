"""A site's `trust` list, typed: PEM bundles (the system's, or files) and root programs.

config.load turns each `trust` entry into one of these once ("system" -> the system bundle,
a path -> PemBundle, "mozilla" -> Program); the checks, the deploy validator, the daemon and
status read the types, never re-split strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PemBundle", "Program", "TrustAnchor", "bundles", "programs"]


@dataclass(frozen=True)
class PemBundle:
    """A file trust store: the chain must validate in its roots (cryptography's verifier)."""

    path: Path
    label: str = ""  # "system" for the system bundle; findings name it so

    def __str__(self) -> str:
        return self.label or str(self.path)


@dataclass(frozen=True)
class Program:
    """A root program (trust.programs.KNOWN_PROGRAMS); the trust engine evaluates it."""

    name: str

    def __str__(self) -> str:
        return self.name


TrustAnchor = PemBundle | Program


def bundles(trust: Iterable[TrustAnchor]) -> tuple[PemBundle, ...]:
    return tuple(t for t in trust if isinstance(t, PemBundle))


def programs(trust: Iterable[TrustAnchor]) -> tuple[str, ...]:
    """The root-program names in `trust`, in order."""
    return tuple(t.name for t in trust if isinstance(t, Program))
