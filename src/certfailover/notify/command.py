"""Command hook: run an argv (no shell) with the event in environment variables."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from ..model import Event
from .base import NotifyError, event_json, event_severity


def event_environment(event: Event) -> dict[str, str]:
    return {
        "CERTFAILOVER_EVENT_KIND": event.kind,
        "CERTFAILOVER_EVENT_SITE": event.site,
        "CERTFAILOVER_EVENT_MESSAGE": event.message,
        "CERTFAILOVER_EVENT_TIME": event.time.isoformat(),
        "CERTFAILOVER_EVENT_SEVERITY": event_severity(event.kind),
        "CERTFAILOVER_EVENT_JSON": event_json(event).decode(),
    }


class CommandNotifier:
    """Run `argv` once per event; a non-zero exit or a timeout is a NotifyError."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not argv:
            raise ValueError("command notifier: argv must not be empty")
        self._argv = tuple(argv)
        self._timeout = timeout
        self._env = dict(os.environ if env is None else env)
        self.name = f"command {self._argv[0]}"

    def __repr__(self) -> str:
        return f"CommandNotifier({self._argv[0]!r})"

    def send(self, event: Event) -> None:
        env = {**self._env, **event_environment(event)}
        try:
            proc = subprocess.run(
                self._argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                timeout=self._timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise NotifyError(f"{self.name}: timed out after {self._timeout:g}s") from None
        except OSError as exc:
            raise NotifyError(f"{self.name}: cannot run: {exc.strerror}") from None
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip()[-300:]
            raise NotifyError(f"{self.name}: exit status {proc.returncode}: {tail}")
