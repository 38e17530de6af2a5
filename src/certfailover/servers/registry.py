"""make_adapter: one `[[server]]` config table -> a ServerAdapter.

Unknown or missing keys raise ValueError naming the key; the config module wraps it with the
file and table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .apache import DEFAULT_RELOAD as APACHE_RELOAD
from .apache import DEFAULT_TEST as APACHE_TEST
from .apache import ApacheAdapter
from .base import ServerAdapter, check_argv
from .command import CommandAdapter
from .files import FilesAdapter, check_paths
from .haproxy import HAProxyAdapter
from .nginx import DEFAULT_RELOAD as NGINX_RELOAD
from .nginx import DEFAULT_TEST as NGINX_TEST
from .nginx import NginxAdapter

__all__ = ["TYPES", "make_adapter"]

_COMMON = {"name", "type"}
_KEYS: Mapping[str, set[str]] = {
    "nginx": {"test", "reload"},
    "apache": {"test", "reload"},
    "haproxy": {"socket", "test", "reload"},
    "command": {"paths", "command"},
    "files": {"paths"},
}
TYPES = tuple(_KEYS)


def _argv(spec: Mapping[str, Any], key: str, default: tuple[str, ...] | None
          ) -> tuple[str, ...] | None:
    if key not in spec:
        return default
    return check_argv(spec[key], key)


def _nginx(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    return NginxAdapter(name=name, test=_argv(spec, "test", NGINX_TEST) or NGINX_TEST,
                        reload=_argv(spec, "reload", NGINX_RELOAD) or NGINX_RELOAD)


def _apache(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    return ApacheAdapter(name=name, test=_argv(spec, "test", APACHE_TEST) or APACHE_TEST,
                         reload=_argv(spec, "reload", APACHE_RELOAD) or APACHE_RELOAD)


def _haproxy(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    sock = spec.get("socket")
    if sock is not None and (not isinstance(sock, str) or not sock):
        raise ValueError("'socket' must be the path of haproxy's admin stats socket")
    reload = _argv(spec, "reload", None)
    if sock is None and reload is None:
        raise ValueError("'socket' is required (or at least 'reload' as a fallback)")
    return HAProxyAdapter(name=name, socket_path=Path(sock) if sock else None,
                          test=_argv(spec, "test", None), reload=reload)


def _command(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    if "command" not in spec:
        raise ValueError("'command' is required (an argv to run after the files are written)")
    paths = check_paths(spec["paths"]) if "paths" in spec else {}
    return CommandAdapter(name=name, paths=paths, command=check_argv(spec["command"], "command"))


def _files(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    if "paths" not in spec:
        raise ValueError("'paths' is required (where to write cert, key, chain, fullchain)")
    return FilesAdapter(name=name, paths=check_paths(spec["paths"]))


_BUILDERS: Mapping[str, Callable[[str, Mapping[str, Any]], ServerAdapter]] = {
    "nginx": _nginx, "apache": _apache, "haproxy": _haproxy, "command": _command,
    "files": _files,
}


def make_adapter(spec: Mapping[str, Any]) -> ServerAdapter:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("'name' is required (a non-empty string)")
    typ = spec.get("type")
    if not isinstance(typ, str) or typ not in _BUILDERS:
        raise ValueError(f"'type' must be one of {', '.join(TYPES)}, not {typ!r}")
    allowed = _COMMON | _KEYS[typ]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} for a {typ} server "
                         f"(allowed: {', '.join(sorted(allowed))})")
    return _BUILDERS[typ](name, spec)
