"""Build the running notifiers from the typed `[notify]` settings (notify.settings.parse).

build returns a notify.routes.Routes: one queue and one worker thread per notifier (started
with a first event); None when the file has no `[notify]` table.
"""

from __future__ import annotations

from .dispatch import Dispatcher
from .routes import Routes
from .settings import NotifySettings

__all__ = ["Routes", "build"]


def build(settings: NotifySettings | None) -> Routes | None:
    if settings is None:
        return None
    dispatchers = [Dispatcher([r.notifier.make()], kinds=None if r.kinds is None else set(r.kinds),
                              min_severity=r.min_severity)
                   for r in settings.routes]
    return Routes(dispatchers, queue_size=settings.queue_size)
