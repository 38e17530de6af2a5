"""`command`: write cert / key / chain to the operator's paths (like `files`), then run an argv.

For any server or appliance certfailover has no adapter for. The argv runs once per batch,
after every file of every site was written; a non-zero exit is a ServerError quoting its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .base import LiveChange, run_argv
from .files import FilesAdapter

__all__ = ["CommandAdapter"]


@dataclass(frozen=True)
class CommandAdapter(FilesAdapter):
    command: tuple[str, ...] = ()
    timeout: float = 60.0

    def apply(self, changes: Sequence[LiveChange]) -> None:
        if not changes:
            return
        if self.paths:
            self.write(changes)
        run_argv(self.command, what="command", server=self.name, timeout=self.timeout)
