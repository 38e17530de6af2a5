"""Deliver notifications from a worker thread so a slow receiver never delays a failover."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ..model import Event
from .dispatch import Delivery
from .routes import Routes

log = logging.getLogger(__name__)

_STOP = object()


class Background:
    """Wrap a notify callable: `__call__` only enqueues.

    Wrapping a notify.routes.Routes (what `[notify]` builds) adds nothing: Routes already has
    one queue and one worker per notifier, so Background passes every call through to it
    (`routes` is that object; `flush` and `dropped` come from it).

    Any other callable gets one bounded queue and one worker thread: when full, the NEWEST
    event is dropped and logged (it is in the event history anyway). `close(timeout)` delivers
    what is queued, then stops the worker.
    """

    def __init__(self, target: Callable[[Event], None], *, maxsize: int = 1000) -> None:
        self._target = target
        self.routes: Routes | None = target if isinstance(target, Routes) else None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._closed = False
        self._dropped = 0
        self._thread: threading.Thread | None = None
        if self.routes is None:
            self._thread = threading.Thread(target=self._run, name="certfailover-notify",
                                            daemon=True)
            self._thread.start()

    @property
    def dropped(self) -> int:
        return self.routes.dropped if self.routes is not None else self._dropped

    def __call__(self, event: Event) -> None:
        if self._closed:
            raise RuntimeError("notifications are closed")
        if self.routes is not None:
            self.routes(event)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._dropped += 1
            log.error("notification queue full: dropped %s event for %s (%d dropped so far)",
                      event.kind, event.site, self._dropped)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, Event)
                try:
                    self._target(item)
                except Exception as exc:  # noqa: BLE001 - the worker must survive
                    log.warning("notification of %s for %s failed: %s", item.kind, item.site, exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> list[Delivery]:
        """Routes.flush for a wrapped Routes; [] for any other target (it reports nothing)."""
        return self.routes.flush(timeout) if self.routes is not None else []

    def close(self, timeout: float = 30.0) -> bool:
        """Deliver the queued events and stop; False if the worker did not finish in time."""
        if self.routes is not None:
            self._closed = True
            return self.routes.close(timeout)
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()
