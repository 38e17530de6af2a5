"""HAProxy 2.6+: hot swap over the Runtime API, no reload.

For every changed site the adapter sends, on the admin stats socket,

    set ssl cert <name> <<\\n<combined.pem of the new target>\\n
    commit ssl cert <name>

where <name> is the `crt` path EXACTLY as written in haproxy's config (after `crt-base`), e.g.
`/srv/vault/live/www/combined.pem`; HAProxy 2.6 refuses the symlink-resolved archive path
("not referenced by the configuration"). The names are read from `show ssl cert`, so the
config must point `crt` at `<vault>/live/<site>/combined.pem` (or a file inside the live dir):
with the live symlink already flipped, the on-disk state matches what a restart would load.

A batch's commands go over ONE connection in the Runtime API's interactive mode (`prompt`:
each answer ends with a "> " prompt line), not one connection per command: ~20% less time per
swapped certificate (measured on HAProxy 2.6, BENCHMARKS.md). Every command has its own total
deadline (`timeout`), however the answer arrives.

HAProxy keeps ONE transaction at a time, and in 2.6 a `set ssl cert` for any name while a
transaction is open silently updates the open one; a transaction left behind by a killed
process is therefore aborted before each set.

Without a reachable socket, the adapter falls back to `test` + `reload` argvs if configured.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ServerConfigError, ServerError
from .base import LiveChange, run_argv

__all__ = ["HAProxyAdapter", "RuntimeAPI", "RuntimeSession"]

PROMPT = b"\n> "  # interactive mode: every answer ends with it


class RuntimeSession:
    """Commands one after the other on ONE stats socket connection in interactive mode."""

    def __init__(self, sock: socket.socket, where: Path, timeout: float) -> None:
        self.sock, self.where, self.timeout = sock, where, timeout

    def command(self, line: str) -> str:
        """Send one command (a payload command ends with its empty line) and return the
        answer without the prompt; OSError (TimeoutError included) when the answer is not
        complete within `timeout` seconds or the connection closes."""
        deadline = time.monotonic() + self.timeout
        buf = b""
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(line.encode() + b"\n")
            while not buf.endswith(PROMPT):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("deadline")
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError(f"{self.where}: haproxy closed the connection "
                                          f"during {line.split(' <<', 1)[0]!r}")
                buf += data
        except TimeoutError as exc:
            raise TimeoutError(f"{self.where}: no complete answer to "
                               f"{line.split(' <<', 1)[0]!r} within {self.timeout:g} s") from exc
        return buf[:-len(PROMPT)].decode("utf-8", "replace")


@dataclass(frozen=True)
class RuntimeAPI:
    """One command per connection on a HAProxy stats socket (level admin)."""

    socket_path: Path
    timeout: float = 10.0

    def command(self, line: str) -> str:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks: list[bytes] = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        finally:
            s.close()
        return b"".join(chunks).decode("utf-8", "replace")

    @contextmanager
    def session(self) -> Iterator[RuntimeSession]:
        """One connection in interactive mode for many commands (OSError when it cannot be
        opened or HAProxy does not answer the `prompt` command in time)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(str(self.socket_path))
            cli = RuntimeSession(s, self.socket_path, self.timeout)
            cli.command("prompt")
            yield cli
        finally:
            s.close()

    def cert_names(self) -> tuple[list[str], str | None]:
        """(loaded certificate names, name of the open transaction or None)."""
        names: list[str] = []
        txn: str | None = None
        section = ""
        for raw in self.command("show ssl cert").splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                section = line[1:].strip()
                continue
            if section == "transaction":
                txn = line.lstrip("*")
            elif section == "filename":
                names.append(line)
        return names, txn


def _payload(pem: bytes, source: Path) -> str:
    text = pem.decode("ascii", "strict")
    lines = [ln for ln in text.splitlines() if ln.strip()]  # an empty line ends the payload
    if not lines:
        raise ServerError(f"{source}: empty certificate file")
    return "\n".join(lines)


@dataclass(frozen=True)
class HAProxyAdapter:
    name: str
    socket_path: Path | None
    test: tuple[str, ...] | None = None
    reload: tuple[str, ...] | None = None
    file: str = "combined.pem"
    timeout: float = 10.0

    def apply(self, changes: Sequence[LiveChange]) -> bool | None:
        """Hot-swap every certificate loaded under each changed live dir: True (each commit is
        in force for every new connection when it returns), None after a fallback reload.

        ServerConfigError when nothing was swapped (missing crt, refused payload), ServerError
        when some certificates of the batch were already committed.
        """
        if not changes:
            return True
        if self.socket_path is None:
            self._fallback(changes, None)
            return None
        api = RuntimeAPI(self.socket_path, self.timeout)
        try:
            names, txn = api.cert_names()
        except OSError as exc:
            self._fallback(changes, exc)
            return None
        plan: list[tuple[str, bytes, Path]] = []
        by_dir: dict[str, list[str]] = {}  # one pass over the names, not one per change
        for n in names:
            by_dir.setdefault(n.rpartition("/")[0] + "/", []).append(n)
        for ch in changes:
            prefix = str(ch.live) + "/"
            mine = by_dir.get(prefix) or [n for n in names if n.startswith(prefix)]
            if not mine:
                raise ServerConfigError(
                    f"server {self.name!r}: haproxy has no certificate loaded under {prefix} "
                    f"(show ssl cert lists {names}); point `crt` at {prefix}{self.file}")
            for n in mine:
                src = ch.target / Path(n).name
                try:
                    plan.append((n, src.read_bytes(), src))
                except OSError as exc:
                    raise ServerConfigError(f"server {self.name!r}: cannot read {src}: "
                                            f"{exc.strerror}") from exc
        try:
            with api.session() as cli:
                if txn is not None:
                    cli.command(f"abort ssl cert {txn}")
                for done, (n, pem, src) in enumerate(plan):
                    out = cli.command(f"set ssl cert {n} <<\n{_payload(pem, src)}\n")
                    if "Transaction created" not in out and "Transaction updated" not in out:
                        cli.command(f"abort ssl cert {n}")
                        # nothing swapped yet: the server still runs the old state entirely
                        err = ServerConfigError if done == 0 else ServerError
                        raise err(
                            f"server {self.name!r}: set ssl cert {n} (from {src}) refused: "
                            f"{out.strip()}")
                    out = cli.command(f"commit ssl cert {n}")
                    if "Success!" not in out:
                        cli.command(f"abort ssl cert {n}")
                        raise ServerError(f"server {self.name!r}: commit ssl cert {n} failed: "
                                          f"{out.strip()}")
        except OSError as exc:
            raise ServerError(f"server {self.name!r}: stats socket {self.socket_path}: "
                              f"{exc}") from exc
        return True

    def _fallback(self, changes: Sequence[LiveChange], cause: OSError | None) -> None:
        why = f"stats socket {self.socket_path}: {cause}" if cause else "no stats socket"
        if self.reload is None:
            raise ServerError(f"server {self.name!r}: {why}, and no reload argv configured")
        if self.test is not None:
            run_argv(self.test, what="config test", server=self.name, config_error=True)
        run_argv(self.reload, what=f"reload ({why})", server=self.name)
