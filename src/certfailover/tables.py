"""Reading one TOML table: typed values, and errors that name the file, the table and the key.

Shared by config.py and by the modules that parse their own table ([notify], [trust]), so
that they depend on this reader, not on the config module (no import cycle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .store.vault import SAFE_NAME

__all__ = ["Secret", "Table", "resolve_secret"]


@dataclass(frozen=True)
class Secret:
    """A resolved secret; never shown in logs or reprs."""

    value: str = field(repr=False)
    source: str = ""

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r})"


class Table:
    """Typed access to one TOML table that reports file, table and key on every error."""

    def __init__(self, file: str, where: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(file, where, "must be a table")
        self.file, self.where, self.data = file, where, data
        self.used: set[str] = set()

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(self.file, f"{self.where}.{key}" if key else self.where, msg)

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ..., *,
            required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required or default is ...:
                raise self.err(key, "is required")
            return default
        value = self.data[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
            raise self.err(key, f"must be {_tname(typ)}, not a boolean")
        if not isinstance(value, typ):
            raise self.err(key, f"must be {_tname(typ)}, got {type(value).__name__}")
        return value

    def str_list(self, key: str, default: Any = ..., *, nonempty: bool = False) -> tuple[str, ...]:
        value = self.get(key, list, default)
        if value is default and default is not ...:
            return tuple(default)
        if not all(isinstance(v, str) and v for v in value):
            raise self.err(key, "must be a list of non-empty strings")
        if nonempty and not value:
            raise self.err(key, "must not be empty")
        return tuple(value)

    def name(self, key: str = "name", *, max_len: int | None = None) -> str:
        value: str = self.get(key, str, required=True)
        if not SAFE_NAME.match(value):
            raise self.err(key, f"{value!r} must use only letters, digits, '.', '_' and '-'")
        if max_len is not None and len(value) > max_len:
            raise self.err(key, f"is {len(value)} characters long; at most {max_len} (the "
                                "database column)")
        return value

    def url(self, key: str, value: str, what: str) -> str:
        """`value` (read from `key`) must be an absolute http(s) URL with a host."""
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise self.err(key, f"{value!r} is not a valid URL ({exc})") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise self.err(key, f"{value!r} must be an http(s) URL of {what}")
        if any(c.isspace() for c in value):
            raise self.err(key, f"{value!r} must not contain whitespace")
        return value

    def check_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.err(unknown[0], "unknown key (check the spelling; see docs/config.md)")


def _tname(typ: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    if isinstance(typ, tuple):
        return " or ".join(names.get(t, t.__name__) for t in typ)
    return names.get(typ, typ.__name__)


def resolve_secret(ref: str, table: Table, key: str, env: Mapping[str, str]) -> Secret:
    if ref.startswith("env:"):
        name = ref[4:]
        if name not in env or not env[name]:
            raise table.err(key, f"environment variable {name} (named by {ref!r}) is not set")
        return Secret(env[name], ref)
    if ref.startswith("file:"):
        p = Path(ref[5:])
        try:
            return Secret(p.read_text().strip(), ref)
        except OSError as exc:
            raise table.err(key, f"cannot read {p}: {exc.strerror}") from exc
    raise table.err(key, "must be a reference 'env:NAME' or 'file:/path' (secrets are never inline)")
