"""Deliver notifications from a worker thread so a slow receiver never delays a failover."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from ..model import Event

log = logging.getLogger(__name__)

_STOP = object()


class Background:
    """Wrap a notify callable (e.g. notify.factory.Routes): `__call__` only enqueues.

    The queue is bounded: when full, the event is dropped and logged (it is in the event
    history anyway). `close(timeout)` delivers what is queued, then stops the worker.
    """

    def __init__(self, target: Callable[[Event], None], *, maxsize: int = 1000) -> None:
        self._target = target
        self._queue: queue.Queue[object] = queue.Queue(maxsize=maxsize)
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="certfailover-notify",
                                        daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        if self._closed:
            raise RuntimeError("notifications are closed")
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.error("notification queue full: dropped %s event for %s", event.kind, event.site)

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

    def close(self, timeout: float = 30.0) -> bool:
        """Deliver the queued events and stop; False if the worker did not finish in time."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()
