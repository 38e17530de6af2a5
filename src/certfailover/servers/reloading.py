"""Servers that re-read their config files: config test, then a graceful reload.

The reload is either the `reload` argv, or, with a `pid_file`, a signal to the master process
whose id that file holds (`signal_master`): for nginx, `nginx -s reload` parses the whole
configuration (loading every certificate) only to find the master's pid, which doubles the cost
of a switch when a server holds thousands of certificates.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import ServerError
from .base import LiveChange, run_argv

__all__ = ["ReloadingAdapter", "signal_master"]


def signal_master(pid_file: Path, sig: int, *, server: str, names: Sequence[str] = ()) -> int:
    """Send `sig` to the process whose id `pid_file` holds; return the pid.

    ServerError naming the file (nothing is signalled) when it is missing or unreadable, does
    not hold a process id, names no running process, or (where /proc tells) a process whose
    name is none of `names` (a stale pid file whose number was reused must not signal a
    stranger).
    """
    where = f"server {server!r}: pid_file {pid_file}"
    try:
        text = pid_file.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise ServerError(f"{where}: cannot read it: {exc.strerror or exc}") from exc
    if not text.isdigit() or int(text) <= 1:
        raise ServerError(f"{where}: does not hold a process id (it holds {text[:40]!r})")
    pid = int(text)
    if names:
        try:
            comm = Path(f"/proc/{pid}/comm").read_text(errors="replace").strip()
        except FileNotFoundError:
            raise ServerError(f"{where}: no process {pid} is running (stale pid file?)") from None
        except OSError:
            comm = ""  # no /proc here: the kill below still finds a missing process
        if comm and comm not in names:
            raise ServerError(f"{where}: process {pid} is {comm!r}, not "
                              f"{' / '.join(names)} (stale pid file?)")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise ServerError(f"{where}: no process {pid} is running (stale pid file?)") from None
    except PermissionError:
        raise ServerError(f"{where}: not permitted to signal process {pid}") from None
    return pid


@dataclass(frozen=True)
class ReloadingAdapter:
    """Run `test` (a failure is a ServerConfigError, the server keeps its old state), then
    reload: run `reload`, or with `pid_file` send `RELOAD_SIGNAL` to the master it names.

    Both run once per batch, however many sites changed.
    """

    name: str
    test: tuple[str, ...]
    reload: tuple[str, ...]
    timeout: float = 60.0
    pid_file: Path | None = None

    RELOAD_SIGNAL: ClassVar[int] = signal.SIGHUP
    MASTER_NAMES: ClassVar[tuple[str, ...]] = ()  # process names a pid_file may name

    def apply(self, changes: Sequence[LiveChange]) -> None:
        if not changes:
            return
        run_argv(self.test, what="config test", server=self.name, timeout=self.timeout,
                 config_error=True)
        if self.pid_file is not None:
            signal_master(self.pid_file, self.RELOAD_SIGNAL, server=self.name,
                          names=self.MASTER_NAMES)
            return
        run_argv(self.reload, what="reload", server=self.name, timeout=self.timeout)
