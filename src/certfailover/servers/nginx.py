"""nginx: `nginx -t` then `nginx -s reload` (graceful: new connections get the new certificate).

`nginx -s reload` only signals the master and returns before the workers switch: the deploy
step proves the switch with a handshake rather than trusting the exit status.
"""

from __future__ import annotations

from .reloading import ReloadingAdapter

DEFAULT_TEST = ("nginx", "-t", "-q")
DEFAULT_RELOAD = ("nginx", "-s", "reload")


class NginxAdapter(ReloadingAdapter):
    pass

