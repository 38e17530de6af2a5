"""Fan an event out to every notifier; one failing notifier never stops the others."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ..model import Event
from .base import EVENT_KINDS, INFO, Notifier, event_severity, severity_rank

log = logging.getLogger(__name__)


#: Delivery.status values
DELIVERED, FAILED, PENDING, DROPPED = "delivered", "failed", "pending", "dropped"


@dataclass(frozen=True)
class Delivery:
    """What became of one event at one notifier.

    `status`: "delivered", "failed" (gave up: error says why), "pending" (queued or being
    tried when asked) or "dropped" (the notifier's queue was full, or it was closed).
    """

    notifier: str
    ok: bool
    error: str | None = None
    status: str = ""
    kind: str = ""
    site: str = ""
    attempts: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", DELIVERED if self.ok else FAILED)


def notifier_name(notifier: Notifier) -> str:
    name = getattr(notifier, "name", None)
    return name if isinstance(name, str) else type(notifier).__name__


class Dispatcher:
    """Deliver events whose kind is in `kinds` (None: all) and severity >= `min_severity`."""

    def __init__(
        self,
        notifiers: Iterable[Notifier],
        *,
        kinds: set[str] | None = None,
        min_severity: str = INFO,
    ) -> None:
        if kinds is not None:
            unknown = sorted(set(kinds) - set(EVENT_KINDS))
            if unknown:
                raise ValueError(
                    f"unknown event kind(s) {', '.join(unknown)}: "
                    f"expected some of {', '.join(EVENT_KINDS)}"
                )
        self._min_rank = severity_rank(min_severity)
        self._notifiers = tuple(notifiers)
        self._kinds = frozenset(kinds) if kinds is not None else None

    @property
    def notifiers(self) -> tuple[Notifier, ...]:
        return self._notifiers

    def wants(self, event: Event) -> bool:
        if self._kinds is not None and event.kind not in self._kinds:
            return False
        return severity_rank(event_severity(event.kind)) >= self._min_rank

    def __call__(self, event: Event) -> None:
        """The engine's `notify` port: a callable taking an Event."""
        self.send(event)

    def send(self, event: Event) -> tuple[Delivery, ...]:
        """Never raises (except BaseException like KeyboardInterrupt); returns what happened."""
        if not self.wants(event):
            return ()
        out: list[Delivery] = []
        for notifier in self._notifiers:
            name = notifier_name(notifier)
            try:
                notifier.send(event)
            except Exception as exc:  # noqa: BLE001 - a notifier must never stop the daemon
                # str(exc) only: NotifyError messages are built without secrets; no traceback,
                # whose chained causes could repeat a URL token or credentials.
                log.warning("notify %s failed for %s event on %s: %s",
                            name, event.kind, event.site, exc)
                out.append(Delivery(name, False, f"{type(exc).__name__}: {exc}"))
            else:
                out.append(Delivery(name, True))
        return tuple(out)
