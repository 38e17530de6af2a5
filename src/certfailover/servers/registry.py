"""make_adapter: one `[[server]]` config table -> a ServerAdapter.

Unknown, missing or malformed keys raise SpecError (a ValueError) whose `key` names the key;
config.load calls check_spec on every table (building nothing with side effects) and reports
the error with the file and the table, before anything is created.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .apache import DEFAULT_RELOAD as APACHE_RELOAD
from .apache import DEFAULT_TEST as APACHE_TEST
from .apache import ApacheAdapter
from .base import ServerAdapter, SpecError, check_argv
from .command import CommandAdapter
from .files import FilesAdapter, check_paths
from .haproxy import HAProxyAdapter
from .nginx import DEFAULT_RELOAD as NGINX_RELOAD
from .nginx import DEFAULT_TEST as NGINX_TEST
from .nginx import NginxAdapter

__all__ = ["TYPES", "SpecError", "check_spec", "make_adapter"]

_COMMON = {"name", "type"}
_KEYS: Mapping[str, set[str]] = {
    "nginx": {"test", "reload", "pid_file"},
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


def _pid_file(spec: Mapping[str, Any]) -> Path | None:
    value = spec.get("pid_file")
    if value is None:
        return None
    if not isinstance(value, str) or not value or not Path(value).is_absolute():
        raise SpecError("pid_file", "must be the absolute path of the server's pid file "
                                    f"(e.g. \"/run/nginx.pid\"), not {value!r}")
    return Path(value)


def _nginx(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    # with pid_file, `reload` is not run (the master is sent SIGHUP after a passing `test`)
    return NginxAdapter(name=name, test=_argv(spec, "test", NGINX_TEST) or NGINX_TEST,
                        reload=_argv(spec, "reload", NGINX_RELOAD) or NGINX_RELOAD,
                        pid_file=_pid_file(spec))


def _apache(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    return ApacheAdapter(name=name, test=_argv(spec, "test", APACHE_TEST) or APACHE_TEST,
                         reload=_argv(spec, "reload", APACHE_RELOAD) or APACHE_RELOAD)


_QUOTED_KEY = re.compile(r"'([^']+)':? (.*)", re.DOTALL)


def _paths(value: object) -> dict[str, str]:
    """files.check_paths, one role at a time so that the error names `paths.<role>`."""
    try:
        if not isinstance(value, Mapping) or not value:
            return check_paths(value)
        out: dict[str, str] = {}
        for role, path in value.items():
            out.update(check_paths({role: path}))
        return out
    except ValueError as exc:
        m = _QUOTED_KEY.fullmatch(str(exc))
        raise (SpecError(m[1], m[2]) if m else SpecError("paths", str(exc))) from None


def _haproxy(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    sock = spec.get("socket")
    if sock is not None and (not isinstance(sock, str) or not sock):
        raise SpecError("socket", "must be the path of haproxy's admin stats socket")
    reload = _argv(spec, "reload", None)
    if sock is None and reload is None:
        raise SpecError("socket", "is required (or at least 'reload' as a fallback)")
    return HAProxyAdapter(name=name, socket_path=Path(sock) if sock else None,
                          test=_argv(spec, "test", None), reload=reload)


def _command(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    if "command" not in spec:
        raise SpecError("command", "is required (an argv to run after the files are written)")
    paths = _paths(spec["paths"]) if "paths" in spec else {}
    return CommandAdapter(name=name, paths=paths, command=check_argv(spec["command"], "command"))


def _files(name: str, spec: Mapping[str, Any]) -> ServerAdapter:
    if "paths" not in spec:
        raise SpecError("paths", "is required (where to write cert, key, chain, fullchain)")
    return FilesAdapter(name=name, paths=_paths(spec["paths"]))


_BUILDERS: Mapping[str, Callable[[str, Mapping[str, Any]], ServerAdapter]] = {
    "nginx": _nginx, "apache": _apache, "haproxy": _haproxy, "command": _command,
    "files": _files,
}


def make_adapter(spec: Mapping[str, Any]) -> ServerAdapter:
    """The adapter for one `[[server]]` table; SpecError (a ValueError) names the bad key."""
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError("name", "is required (a non-empty string)")
    typ = spec.get("type")
    if not isinstance(typ, str) or typ not in _BUILDERS:
        raise SpecError("type", f"must be one of {', '.join(TYPES)}, not {typ!r}")
    allowed = _COMMON | _KEYS[typ]
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SpecError(unknown[0], f"is not a key of a {typ} server (check the spelling; "
                                    f"allowed: {', '.join(sorted(allowed))})")
    return _BUILDERS[typ](name, spec)


def check_spec(spec: Mapping[str, Any]) -> None:
    """Validate one `[[server]]` table without side effects (adapters are plain values: building
    one opens, runs and writes nothing). SpecError names the bad key."""
    make_adapter(spec)
