"""The read-only status page the daemon serves (`run --web HOST:PORT`, `[web]`): docs/web.md."""

from .settings import WebSettings, web_settings, with_listen

__all__ = ["WebSettings", "web_settings", "with_listen"]
