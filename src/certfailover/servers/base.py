"""The one narrow protocol every web server adapter implements, and what it is handed.

The engine flips `live/<site>` symlinks in the vault and then calls `ServerAdapter.apply`
ONCE for the whole batch of sites that changed on that server. The adapter makes the server
serve what each live symlink now points at (reload, hot swap, or a write to fixed paths).
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import ServerConfigError, ServerError

__all__ = ["Endpoint", "LiveChange", "ServerAdapter", "SpecError", "check_argv", "run_argv"]


class SpecError(ValueError):
    """A bad key in a `[[server]]` table: `key` names it ("test", "paths.cert"), `message` says
    why. str() reads "'test' must be ..."; the config module reports file, table and key."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key!r} {message}")


@dataclass(frozen=True)
class Endpoint:
    """Where a site is served: a TCP address to handshake with."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse "host:port" or "[v6]:port"; ValueError names the text on bad input."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"endpoint {text!r} must be host:port or [v6]:port")
        if host.startswith("["):
            if not host.endswith("]"):
                raise ValueError(f"endpoint {text!r}: unbalanced '[' in IPv6 address")
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError as exc:
                raise ValueError(f"endpoint {text!r}: bad IPv6 address") from exc
        elif ":" in host:
            raise ValueError(f"endpoint {text!r}: an IPv6 address must be written [addr]:port")
        p = int(port)
        if not 0 < p < 65536:
            raise ValueError(f"endpoint {text!r}: port {p} out of range 1-65535")
        return cls(host, p)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LiveChange:
    site: str
    live: Path  # vault.live_path(site): the symlink the server config points at
    target: Path  # archive dir now (to be) served


@runtime_checkable
class ServerAdapter(Protocol):
    @property
    def name(self) -> str:
        """The `[[server]]` name (journals record it; recover() looks adapters up by it)."""
        ...

    def apply(self, changes: Sequence[LiveChange]) -> bool | None:
        """Make the server serve what each live symlink now points at. One call per batch.

        Returns True when every new connection is served the new state once it returns (a hot
        swap: no old generation of workers still answers), so one expected handshake proves a
        site; None (a reload, asynchronous) asks for steady evidence (deploy's `settle`).
        Raises ServerConfigError (the server refused the new state and still runs the old one)
        or ServerError (anything else).
        """
        ...


def check_argv(value: object, key: str) -> tuple[str, ...]:
    """A config argv: a non-empty list of strings; SpecError (a ValueError) naming `key`."""
    if isinstance(value, str):
        raise SpecError(key, f"must be a list of strings (an argv, no shell), not the string "
                             f"{value!r}: e.g. {value.split()!r}")
    if not isinstance(value, (list, tuple)) or not value or not all(
        isinstance(a, str) and a for a in value
    ):
        raise SpecError(key, "must be a non-empty list of strings (an argv)")
    return tuple(value)


def run_argv(argv: Sequence[str], *, what: str, server: str, timeout: float = 60.0,
             config_error: bool = False) -> str:
    """Run one argv (no shell); return its combined output.

    A non-zero exit raises ServerConfigError if `config_error` else ServerError, quoting the
    output so the operator sees e.g. nginx's own message.
    """
    exc_type = ServerConfigError if config_error else ServerError
    try:
        proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise exc_type(f"server {server!r}: {what} {list(argv)!r}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise exc_type(f"server {server!r}: {what} {list(argv)!r}: timed out after "
                       f"{timeout:g} s") from exc
    out = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise exc_type(f"server {server!r}: {what} {list(argv)!r} exited {proc.returncode}: {out}")
    return out
