"""A certfailover config for lab CAs and a lab web server: used by tests and `certfailover demo`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LabCAEntry:
    name: str
    directory: str
    ca_bundle: Path | None = None
    crl_urls: tuple[str, ...] = ()
    ari_url: str | None = None
    crl_sign_required: bool = True


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def _table(header: str, values: Mapping[str, Any]) -> str:
    lines = [header]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None and v != ()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, *, store: Path, cas: Sequence[LabCAEntry], server: Mapping[str, Any] | None,
                 site: Mapping[str, Any], challenge: Mapping[str, Any],
                 daemon: Mapping[str, Any] | None = None) -> Path:
    """Write a config with one site; `server` is a [[server]] table (e.g. WebServer.spec)."""
    parts = [_table("[store]", {"directory": str(store)})]
    if daemon:
        parts.append(_table("[daemon]", daemon))
    for ca in cas:
        parts.append(_table("[[ca]]", {"name": ca.name, "directory": ca.directory,
                                       "ca_bundle": str(ca.ca_bundle) if ca.ca_bundle else None,
                                       "crl_urls": ca.crl_urls, "ari_url": ca.ari_url,
                                       "crl_sign_required": ca.crl_sign_required}))
    if server:
        parts.append(_table("[[server]]", server))
    parts.append(_table("[[site]]", site))
    parts.append(_table("[site.challenge]", challenge))
    path.write_text("\n".join(parts))
    return path


def offline_config(tmp: Path, bundle: Path, *, cas: Sequence[str] = ("a", "b"),
                   domains: Sequence[str] = ("www.example.test",), database: str | None = None,
                   port: int = 9, extra: str = "") -> Path:
    """`<tmp>/certfailover.toml`: one site "www" trusting `bundle`, CAs whose directories point
    at a closed loopback port (nothing is ever issued), a store under `tmp`. For CLI and store
    tests that need a valid config and no CA; `extra` is appended (more tables or keys)."""
    lines = ["[store]", f"directory = {json.dumps(str(tmp / 'store'))}"]
    if database is not None:
        lines.append(f"database = {json.dumps(database)}")
    for ca in cas:
        lines += ["[[ca]]", f"name = {json.dumps(ca)}",
                  f"directory = \"https://127.0.0.1:{port}/{ca}/dir\""]
    lines += ["[[site]]", 'name = "www"', f"domains = {_toml_value(list(domains))}",
              f"cas = {_toml_value(list(cas))}", f"trust = [{json.dumps(str(bundle))}]"]
    path = tmp / "certfailover.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
