"""Command hook: run an argv (no shell) with the event in environment variables.

The hook gets a clean environment: PATH, LANG, LANGUAGE and LC_* from the daemon's (so it finds
its tools and speaks the operator's language) plus the CERTFAILOVER_EVENT_* variables. Nothing
else: the daemon's environment may hold secrets (EAB keys, SMTP passwords referenced as
"env:NAME") that a hook must not see.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from ..model import Event
from .base import Limits, NotifyError, event_json, event_severity

#: used when the daemon has no PATH at all
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def event_environment(event: Event) -> dict[str, str]:
    return {
        "CERTFAILOVER_EVENT_KIND": event.kind,
        "CERTFAILOVER_EVENT_SITE": event.site,
        "CERTFAILOVER_EVENT_MESSAGE": event.message,
        "CERTFAILOVER_EVENT_TIME": event.time.isoformat(),
        "CERTFAILOVER_EVENT_SEVERITY": event_severity(event.kind),
        "CERTFAILOVER_EVENT_JSON": event_json(event).decode(),
    }


def base_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What a hook inherits from `env`: PATH, LANG, LANGUAGE, LC_* (and nothing else)."""
    out = {k: v for k, v in env.items()
           if k in ("PATH", "LANG", "LANGUAGE") or k.startswith("LC_")}
    out.setdefault("PATH", DEFAULT_PATH)
    return out


class CommandNotifier:
    """Run `argv` once per event; a non-zero exit or a timeout is a NotifyError.

    `env` is where PATH/LANG/LC_* are taken from (default: the daemon's environment); see
    base_environment. Not retried by default (`retries=0`): a hook need not be idempotent.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        deadline: float | None = None,
    ) -> None:
        if not argv:
            raise ValueError("command notifier: argv must not be empty")
        self._argv = tuple(argv)
        self._timeout = timeout
        self._env = base_environment(os.environ if env is None else env)
        self.limits = Limits(timeout=timeout, retries=retries, backoff=backoff, deadline=deadline)
        self.name = f"command {self._argv[0]}"

    def __repr__(self) -> str:
        return f"CommandNotifier({self._argv[0]!r})"

    def environment(self, event: Event) -> dict[str, str]:
        """The whole environment the hook runs with for `event`."""
        return {**self._env, **event_environment(event)}

    def send(self, event: Event) -> None:
        self.attempt(event)

    def attempt(self, event: Event, timeout: float | None = None) -> None:
        timeout = self._timeout if timeout is None else timeout
        try:
            proc = subprocess.run(
                self._argv, env=self.environment(event), stdin=subprocess.DEVNULL,
                capture_output=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise NotifyError(f"{self.name}: timed out after {timeout:g}s") from None
        except OSError as exc:
            raise NotifyError(f"{self.name}: cannot run: {exc.strerror}",
                              retryable=False) from None
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip()[-300:]
            raise NotifyError(f"{self.name}: exit status {proc.returncode}: {tail}")
