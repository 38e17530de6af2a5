"""Servers that re-read their config files: config test, then a graceful reload."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .base import LiveChange, run_argv


@dataclass(frozen=True)
class ReloadingAdapter:
    """Run `test` (a failure is a ServerConfigError, the server keeps its old state), then `reload`.

    Both argvs run once per batch, however many sites changed.
    """

    name: str
    test: tuple[str, ...]
    reload: tuple[str, ...]
    timeout: float = 60.0

    def apply(self, changes: Sequence[LiveChange]) -> None:
        if not changes:
            return
        run_argv(self.test, what="config test", server=self.name, timeout=self.timeout,
                 config_error=True)
        run_argv(self.reload, what="reload", server=self.name, timeout=self.timeout)
