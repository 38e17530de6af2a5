"""The read-only status page the daemon serves (`run --web HOST:PORT`, `[web]`): docs/web.md."""

from .settings import WebSettings, settings_from_config, with_listen

__all__ = ["WebSettings", "settings_from_config", "with_listen"]
