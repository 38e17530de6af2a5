"""Apache httpd 2.4 with mod_ssl: `apache2 -t` then `apache2 -k graceful`.

A graceful restart keeps the listening sockets open; children finish their requests and new
ones load the new certificate.
"""

from __future__ import annotations

from .reloading import ReloadingAdapter

DEFAULT_TEST = ("apache2ctl", "-t")
DEFAULT_RELOAD = ("apache2ctl", "-k", "graceful")


class ApacheAdapter(ReloadingAdapter):
    pass

