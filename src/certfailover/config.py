"""TOML configuration -> frozen model. Every error names the file, the table and the key.

Secrets (EAB HMAC keys, webhook secrets) are given as references, never inline:
"env:NAME" reads an environment variable, "file:/path" reads a file. They are resolved when
loaded and never printed (`repr` hides them).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .servers.base import Endpoint
from .store.vault import _SAFE

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
CHALLENGES = ("http-01-webroot", "http-01-standalone")
REVOCATION_MODES = ("soft-fail", "hard-fail")
DEFAULT_PATH = Path("certfailover.toml")


@dataclass(frozen=True)
class Secret:
    """A resolved secret; never shown in logs or reprs."""

    value: str = field(repr=False)
    source: str = ""

    def __repr__(self) -> str:
        return f"Secret(source={self.source!r})"


@dataclass(frozen=True)
class CAConfig:
    name: str
    directory: str
    email: str | None = None
    eab_kid: str | None = None
    eab_hmac_key: Secret | None = None
    ca_bundle: Path | None = None
    preferred_chain: str | None = None
    crl_urls: tuple[str, ...] = ()
    ari_url: str | None = None
    crl_sign_required: bool = True  # CRL signer needs the cRLSign key usage (Pebble lacks it)


@dataclass(frozen=True)
class ServerConfig:
    name: str
    type: str
    spec: Mapping[str, Any]  # the whole table, handed to servers.make_adapter


@dataclass(frozen=True)
class ChallengeConfig:
    type: str = "http-01-standalone"
    webroot: Path | None = None
    listen_host: str = "0.0.0.0"
    listen_port: int = 80


@dataclass(frozen=True)
class SiteConfig:
    name: str
    domains: tuple[str, ...]
    cas: tuple[str, ...]
    server: str | None
    endpoints: tuple[Endpoint, ...]
    challenge: ChallengeConfig
    key_type: str = "ec-p256"
    trust: tuple[str, ...] = ("system",)
    min_standbys: int = 1
    renew_fraction: float = 1 / 3
    revocation: str = "soft-fail"
    switch_back: bool = False
    forecast_days: int = 90

    @property
    def sni(self) -> str:
        return self.domains[0]


@dataclass(frozen=True)
class DaemonConfig:
    interval: float = 300.0
    issue_timeout: float = 120.0
    verify_timeout: float = 10.0
    max_orders: int = 4  # per site and CA per orders_window (Let's Encrypt: 5 duplicates a week)
    orders_window: float = 7 * 86400.0
    order_backoff: float = 60.0  # first wait after a failed or unusable order, doubling
    order_backoff_cap: float = 6 * 3600.0
    switch_before_expiry: float | None = None  # None: 2 intervals, at least 60 s

    @property
    def expiry_margin(self) -> float:
        """How long before notAfter a site leaves its certificate at the latest."""
        if self.switch_before_expiry is not None:
            return self.switch_before_expiry
        return max(60.0, 2 * self.interval)


@dataclass(frozen=True)
class Config:
    path: Path
    store: Path
    database: str
    cas: Mapping[str, CAConfig]
    servers: Mapping[str, ServerConfig]
    sites: tuple[SiteConfig, ...]
    daemon: DaemonConfig
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def site(self, name: str) -> SiteConfig:
        for s in self.sites:
            if s.name == name:
                return s
        raise ConfigError(str(self.path), "", f"no [[site]] named {name!r}")


class _Table:
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

    def name(self, key: str = "name") -> str:
        value: str = self.get(key, str, required=True)
        if not _SAFE.match(value):
            raise self.err(key, f"{value!r} must use only letters, digits, '.', '_' and '-'")
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


def resolve_secret(ref: str, table: _Table, key: str, env: Mapping[str, str]) -> Secret:
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


def parse_endpoint(text: str, table: _Table, key: str) -> Endpoint:
    try:
        return Endpoint.parse(text)
    except ValueError as exc:
        raise table.err(key, str(exc)) from exc


def default_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CERTFAILOVER_CONFIG") or DEFAULT_PATH)


def load(path: Path, *, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    path = Path(path)
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(file, "", "file not found (create one with `certfailover init`)") from exc
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from exc
    return parse(raw, file=file, base=path.parent, env=env)


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _array(raw: Mapping[str, Any], key: str, file: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(file, f"[[{key}]]", f"must be an array of tables ([[{key}]])")
    return value


def _seconds(t: _Table, key: str, default: float) -> float:
    """A duration: seconds as a number, or text like "90s", "15m", "6h", "7d"."""
    raw = t.get(key, object, None)
    if raw is None:
        return default
    from .schedule import parse_duration
    try:
        return parse_duration(raw).total_seconds()
    except (ValueError, TypeError) as exc:
        raise t.err(key, str(exc)) from None


def parse(raw: Mapping[str, Any], *, file: str, base: Path, env: Mapping[str, str]) -> Config:
    top = _Table(file, "(top level)", dict(raw))
    for known in ("store", "ca", "server", "site", "daemon", "notify", "metrics", "revocation",
                  "trust", "schedule"):
        top.used.add(known)
    top.check_unknown()

    st = _Table(file, "[store]", raw.get("store", {}))
    store = _path(st.get("directory", str, "/var/lib/certfailover"), base)
    database = st.get("database", str, f"sqlite:///{store / 'state.db'}")
    st.check_unknown()

    dm = _Table(file, "[daemon]", raw.get("daemon", {}))
    margin = dm.get("switch_before_expiry", float, None)
    daemon = DaemonConfig(
        interval=dm.get("interval", float, 300.0),
        issue_timeout=dm.get("issue_timeout", float, 120.0),
        verify_timeout=dm.get("verify_timeout", float, 10.0),
        max_orders=dm.get("max_orders", int, 4),
        orders_window=_seconds(dm, "orders_window", 7 * 86400.0),
        order_backoff=_seconds(dm, "order_backoff", 60.0),
        order_backoff_cap=_seconds(dm, "order_backoff_cap", 6 * 3600.0),
        switch_before_expiry=None if margin is None else float(margin),
    )
    for key in ("interval", "issue_timeout", "verify_timeout", "orders_window", "order_backoff",
                "order_backoff_cap"):
        if getattr(daemon, key) <= 0:
            raise dm.err(key, "must be > 0 seconds")
    if daemon.max_orders < 1:
        raise dm.err("max_orders", "must be at least 1")
    if daemon.switch_before_expiry is not None and daemon.switch_before_expiry < 0:
        raise dm.err("switch_before_expiry", "must be >= 0 seconds")
    if daemon.order_backoff_cap < daemon.order_backoff:
        raise dm.err("order_backoff_cap", "must be >= order_backoff")
    dm.check_unknown()

    cas: dict[str, CAConfig] = {}
    ca_list = _array(raw, "ca", file)
    for i, item in enumerate(ca_list):
        t = _Table(file, f"[[ca]] #{i + 1}", item)
        name = t.name()
        t.where = f"[[ca]] {name!r}"
        if name in cas:
            raise t.err("name", "duplicate CA name")
        directory = t.get("directory", str, required=True)
        if not directory.startswith(("https://", "http://")):
            raise t.err("directory", f"{directory!r} must be an http(s) URL of an ACME directory")
        kid = t.get("eab_kid", str, None)
        hmac_ref = t.get("eab_hmac_key", str, None)
        if (kid is None) != (hmac_ref is None):
            raise t.err("eab_hmac_key" if kid else "eab_kid", "eab_kid and eab_hmac_key go together")
        bundle = t.get("ca_bundle", str, None)
        bundle_path = _path(bundle, base) if bundle else None
        if bundle_path is not None and not bundle_path.is_file():
            raise t.err("ca_bundle", f"{bundle_path} does not exist")
        cas[name] = CAConfig(
            name=name,
            directory=directory,
            email=t.get("email", str, None),
            eab_kid=kid,
            eab_hmac_key=resolve_secret(hmac_ref, t, "eab_hmac_key", env) if hmac_ref else None,
            ca_bundle=bundle_path,
            preferred_chain=t.get("preferred_chain", str, None),
            crl_urls=t.str_list("crl_urls", ()),
            ari_url=t.get("ari_url", str, None),
            crl_sign_required=t.get("crl_sign_required", bool, True),
        )
        t.check_unknown()

    servers: dict[str, ServerConfig] = {}
    srv_list = _array(raw, "server", file)
    for i, item in enumerate(srv_list):
        t = _Table(file, f"[[server]] #{i + 1}", item)
        name = t.name()
        if name in servers:
            raise t.err("name", "duplicate server name")
        typ = t.get("type", str, required=True)
        servers[name] = ServerConfig(name=name, type=typ, spec=dict(item))

    sites: list[SiteConfig] = []
    site_list = _array(raw, "site", file)
    seen: set[str] = set()
    for i, item in enumerate(site_list):
        t = _Table(file, f"[[site]] #{i + 1}", item)
        name = t.name()
        t.where = f"[[site]] {name!r}"
        if name in seen:
            raise t.err("name", "duplicate site name")
        seen.add(name)
        domains = t.str_list("domains", nonempty=True)
        site_cas = t.str_list("cas", nonempty=True)
        for ca in site_cas:
            if ca not in cas:
                raise t.err("cas", f"{ca!r} is not a configured [[ca]] (have: {', '.join(cas) or 'none'})")
        if len(set(site_cas)) != len(site_cas):
            raise t.err("cas", "lists a CA twice")
        key_type = t.get("key_type", str, "ec-p256")
        if key_type not in KEY_TYPES:
            raise t.err("key_type", f"{key_type!r} is not one of {', '.join(KEY_TYPES)}")
        server = t.get("server", str, None)
        if server is not None and server not in servers:
            raise t.err("server", f"{server!r} is not a configured [[server]]")
        endpoints = tuple(parse_endpoint(e, t, "endpoints") for e in t.str_list("endpoints", ()))
        if server is not None and not endpoints:
            raise t.err("endpoints", "is required when a server is set (where to verify with a handshake)")
        trust = tuple(
            str(_path(x, base)) if ("/" in x or x.endswith(".pem")) else x
            for x in t.str_list("trust", ("system",), nonempty=True)
        )
        from .trust.programs import KNOWN_PROGRAMS
        for x in trust:
            if "/" in x and not Path(x).is_file():
                raise t.err("trust", f"trust bundle {x} does not exist")
            if "/" not in x and x != "system" and x not in KNOWN_PROGRAMS:
                raise t.err("trust", f"{x!r} is not 'system', a PEM bundle path or a root program "
                            f"({', '.join(sorted(KNOWN_PROGRAMS))})")
        min_standbys = t.get("min_standbys", int, 1)
        if min_standbys < 0:
            raise t.err("min_standbys", "must be >= 0")
        if min_standbys >= len(site_cas) and len(site_cas) > 0 and min_standbys > 0:
            raise t.err("min_standbys", f"needs at least {min_standbys + 1} CAs in 'cas' to keep "
                        f"{min_standbys} standby(s) from CAs other than the active one's")
        renew_fraction = t.get("renew_fraction", float, 1 / 3)
        if not 0 < renew_fraction < 1:
            raise t.err("renew_fraction", "must be between 0 and 1 (fraction of lifetime left)")
        revocation = t.get("revocation", str, "soft-fail")
        if revocation not in REVOCATION_MODES:
            raise t.err("revocation", f"must be one of {', '.join(REVOCATION_MODES)}")
        ch_raw = t.get("challenge", dict, {})
        ct = _Table(file, f"{t.where}.challenge", ch_raw)
        ctype = ct.get("type", str, "http-01-standalone")
        if ctype not in CHALLENGES:
            raise ct.err("type", f"{ctype!r} is not one of {', '.join(CHALLENGES)}")
        webroot = ct.get("webroot", str, None)
        if ctype == "http-01-webroot" and not webroot:
            raise ct.err("webroot", "is required for http-01-webroot")
        listen = ct.get("listen", str, "0.0.0.0:80")
        lep = parse_endpoint(listen, ct, "listen")
        ct.check_unknown()
        sites.append(SiteConfig(
            name=name, domains=domains, cas=site_cas, server=server, endpoints=endpoints,
            challenge=ChallengeConfig(ctype, _path(webroot, base) if webroot else None, lep.host, lep.port),
            key_type=key_type, trust=trust, min_standbys=min_standbys,
            renew_fraction=renew_fraction, revocation=revocation,
            switch_back=t.get("switch_back", bool, False),
            forecast_days=t.get("forecast_days", int, 90),
        ))
        t.check_unknown()

    return Config(path=Path(file), store=store, database=database, cas=cas, servers=servers,
                  sites=tuple(sites), daemon=daemon, raw=dict(raw))
