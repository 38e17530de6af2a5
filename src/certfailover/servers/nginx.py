"""nginx: `nginx -t` then `nginx -s reload` (graceful: new connections get the new certificate).

`nginx -s reload` only signals the master and returns before the workers switch: the deploy
step proves the switch with a handshake rather than trusting the exit status. It also parses
the whole configuration, loading every certificate, just to find the master's pid; with
`pid_file` (the file of nginx's `pid` directive) the adapter sends the master SIGHUP itself
after the passing `nginx -t`, so a switch loads the configuration twice (test, reload), not
three times.
"""

from __future__ import annotations

import signal
from typing import ClassVar

from .reloading import ReloadingAdapter

DEFAULT_TEST = ("nginx", "-t", "-q")
DEFAULT_RELOAD = ("nginx", "-s", "reload")


class NginxAdapter(ReloadingAdapter):
    RELOAD_SIGNAL: ClassVar[int] = signal.SIGHUP
    MASTER_NAMES: ClassVar[tuple[str, ...]] = ("nginx",)
