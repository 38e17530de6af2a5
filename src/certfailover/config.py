"""TOML configuration -> frozen model. Every error names the file, the table and the key.

Secrets (EAB HMAC keys, webhook secrets) are given as references, never inline:
"env:NAME" reads an environment variable, "file:/path" reads a file. They are resolved when
loaded and never printed (`repr` hides them).

`load` validates the whole file before anything is created: this module's own tables, every
`[[server]]` table (servers.registry.check_spec) and the tables other modules read
(`[schedule]`, `[metrics]`, `[trust]`, `[notify]`, see validate_tables). Site domains are
normalised to lowercase A-labels without a trailing dot (normalize_domain).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import idna

from .errors import ConfigError
from .servers.base import Endpoint, SpecError
from .tables import Secret, Table, resolve_secret

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
CHALLENGES = ("http-01-webroot", "http-01-standalone")
REVOCATION_MODES = ("soft-fail", "hard-fail")
DEFAULT_PATH = Path("certfailover.toml")
#: longest site and CA name: the `site` and `ca` columns of store/db.py are String(100)
NAME_MAX = 100
#: top-level tables; each is read by someone (see validate_tables for the last four)
TABLES = ("store", "daemon", "ca", "server", "site", "schedule", "metrics", "trust", "notify")
#: [schedule] periods that must be > 0 (Intervals itself accepts 0 for them)
SCHEDULE_PERIODS = ("crl", "ocsp", "ari", "trust")
WILDCARD_MESSAGE = ("is a wildcard: no challenge that can prove a wildcard is configured; "
                    "DNS-01 is needed")


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





def normalize_domain(text: str) -> str:
    """A `[[site]] domains` entry as certificates carry it: lowercase A-labels (IDNA 2008 with
    UTS #46 mapping, "bücher.example" -> "xn--bcher-kva.example"), a trailing dot removed.

    ValueError says why a name cannot be used: wildcards, whitespace, URLs, ports, IP
    addresses, empty labels, labels over 63 or names over 253 characters, characters a host
    name may not have.
    """
    if not text:
        raise ValueError("is empty")
    if any(c.isspace() for c in text):
        raise ValueError(f"{text!r} contains whitespace; give one DNS name per entry")
    if "://" in text or "/" in text:
        host = urlsplit(text if "://" in text else f"//{text}").hostname or "www.example.com"
        raise ValueError(f"{text!r} is a URL or a path, not a DNS name (give only the name, "
                         f"e.g. {host!r})")
    if "*" in text:
        raise ValueError(f"{text!r} {WILDCARD_MESSAGE}")
    name = text.removesuffix(".")  # the root's dot: the same name
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    else:
        raise ValueError(f"{text!r} is an IP address; HTTP-01 sites are DNS names")
    if ":" in name:
        raise ValueError(f"{text!r}: a DNS name has no port or ':'")
    if not name or name.startswith(".") or ".." in name or name.endswith("."):
        raise ValueError(f"{text!r} has an empty label (a leading dot or two dots in a row)")
    try:
        mapped = idna.uts46_remap(name, std3_rules=True, transitional=False)
    except idna.IDNAError as exc:
        raise ValueError(f"{text!r} is not a valid DNS name: {exc}") from None
    for label in mapped.split("."):
        alabel = label if label.isascii() else "xn--" + label.encode("punycode").decode()
        if len(alabel) > 63:
            raise ValueError(f"{_short(text)}: the label {_short(alabel)} is {len(alabel)} "
                             "characters long; at most 63")
    try:
        out = idna.encode(mapped, uts46=False).decode("ascii")
    except idna.IDNAError as exc:
        if len(mapped) > 253 or "too long" in str(exc).lower():
            raise ValueError(f"{_short(text)} is too long: at most 253 characters (as "
                             "A-labels)") from None
        raise ValueError(f"{text!r} is not a valid DNS name: {exc}") from None
    if len(out) > 253:
        raise ValueError(f"{_short(text)} is {len(out)} characters long (as A-labels); "
                         "at most 253")
    if out.rsplit(".", 1)[-1].isdigit():
        raise ValueError(f"{text!r}: the last label is all digits (not a DNS name)")
    return out


def _short(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:30] + "..." + text[-20:])


def _domains(t: Table) -> tuple[str, ...]:
    """The site's `domains`, normalised; errors name the entry ("domains[2]", from 0)."""
    seen: dict[str, int] = {}
    for i, text in enumerate(t.str_list("domains", nonempty=True)):
        try:
            name = normalize_domain(text)
        except ValueError as exc:
            raise t.err(f"domains[{i}]", str(exc)) from None
        if name in seen:
            same = f" (the same as {name!r})" if name != text else ""
            raise t.err(f"domains[{i}]", f"{text!r}{same} is a duplicate of "
                                         f"domains[{seen[name]}]")
        seen[name] = i
    return tuple(seen)


def parse_endpoint(text: str, table: Table, key: str) -> Endpoint:
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
    cfg = parse(raw, file=file, base=path.parent, env=env)
    validate_tables(cfg.raw, file=file, store=cfg.store, env=env)
    return cfg


def validate_tables(raw: Mapping[str, Any], *, file: str, store: Path,
                    env: Mapping[str, str]) -> None:
    """Validate the tables other modules read, with their own parsers, creating nothing:
    `[schedule]` (schedule.Intervals), `[metrics]` (metrics.listen_from_config), `[trust]`
    (trust.refresh.settings_from_config) and `[notify]` (notify.factory.from_config: the
    notifiers are built and discarded; their worker threads start only with a first event).
    Raises ConfigError naming the file, the table and the key."""
    tables: dict[str, Mapping[str, Any]] = {}
    for name in ("schedule", "metrics", "trust", "notify"):
        value = raw.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(file, f"[{name}]", "must be a table")
        tables[name] = value

    from .schedule import Intervals
    intervals = Intervals.from_mapping(tables["schedule"], file=file, table="[schedule]")
    for key in SCHEDULE_PERIODS:
        if key in tables["schedule"] and getattr(intervals, key).total_seconds() <= 0:
            raise ConfigError(file, f"[schedule].{key}", "must be > 0 (how often to check)")

    from .metrics import listen_from_config
    listen_from_config(tables["metrics"], file=file)

    from .trust.refresh import settings_from_config
    settings_from_config(tables["trust"], file=file, store=store)

    from .notify.factory import from_config
    try:
        from_config(tables["notify"], file=file, env=env)
    except ValueError as exc:  # a notifier's own check (e.g. a malformed mail address)
        raise ConfigError(file, "[notify]", str(exc)) from None


def _path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _array(raw: Mapping[str, Any], key: str, file: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(file, f"[[{key}]]", f"must be an array of tables ([[{key}]])")
    return value


def _seconds(t: Table, key: str, default: float) -> float:
    """A duration: seconds as a number, or text like "90s", "15m", "6h", "7d"."""
    raw = t.get(key, object, None)
    if raw is None:
        return default
    from .schedule import parse_duration
    try:
        return parse_duration(raw).total_seconds()
    except (ValueError, TypeError) as exc:
        raise t.err(key, str(exc)) from None


def _check_top_level(raw: Mapping[str, Any], file: str) -> None:
    for key in raw:
        if key in TABLES:
            continue
        value = raw[key]
        if isinstance(value, dict):
            where = f"[{key}]"
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            where = f"[[{key}]]"
        else:
            raise ConfigError(file, f"(top level).{key}", "unknown key (keys belong in a table; "
                              "check the spelling; see docs/config.md)")
        raise ConfigError(file, where, f"unknown table: nothing reads it (known tables: "
                          f"{', '.join(TABLES)}; see docs/config.md)")


def parse(raw: Mapping[str, Any], *, file: str, base: Path, env: Mapping[str, str]) -> Config:
    """This module's tables and every `[[server]]` table; `load` also runs validate_tables."""
    _check_top_level(raw, file)

    st = Table(file, "[store]", raw.get("store", {}))
    directory = st.get("directory", str, "/var/lib/certfailover")
    if not directory.strip():
        raise st.err("directory", "must not be empty")
    store = _path(directory, base)
    database = st.get("database", str, f"sqlite:///{store / 'state.db'}")
    if not database.strip():
        raise st.err("database", "must not be empty")
    st.check_unknown()

    dm = Table(file, "[daemon]", raw.get("daemon", {}))
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
        t = Table(file, f"[[ca]] #{i + 1}", item)
        name = t.name(max_len=NAME_MAX)
        t.where = f"[[ca]] {name!r}"
        if name in cas:
            raise t.err("name", "duplicate CA name")
        directory = t.url("directory", t.get("directory", str, required=True),
                          "an ACME directory")
        crl_urls = t.str_list("crl_urls", ())
        for j, url in enumerate(crl_urls):
            t.url(f"crl_urls[{j}]", url, "a CRL")
        ari_url = t.get("ari_url", str, None)
        if ari_url is not None:
            t.url("ari_url", ari_url, "the CA's renewalInfo endpoint")
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
            crl_urls=crl_urls,
            ari_url=ari_url,
            crl_sign_required=t.get("crl_sign_required", bool, True),
        )
        t.check_unknown()

    servers: dict[str, ServerConfig] = {}
    srv_list = _array(raw, "server", file)
    for i, item in enumerate(srv_list):
        t = Table(file, f"[[server]] #{i + 1}", item)
        name = t.name()
        t.where = f"[[server]] {name!r}"
        if name in servers:
            raise t.err("name", "duplicate server name")
        typ = t.get("type", str, required=True)
        from .servers.registry import check_spec
        try:
            check_spec(item)
        except SpecError as exc:
            raise t.err(exc.key, exc.message) from None
        except ValueError as exc:  # an adapter's own check without a key
            raise t.err("", str(exc)) from None
        servers[name] = ServerConfig(name=name, type=typ, spec=dict(item))

    sites: list[SiteConfig] = []
    site_list = _array(raw, "site", file)
    seen: set[str] = set()
    for i, item in enumerate(site_list):
        t = Table(file, f"[[site]] #{i + 1}", item)
        name = t.name(max_len=NAME_MAX)
        t.where = f"[[site]] {name!r}"
        if name in seen:
            raise t.err("name", "duplicate site name")
        seen.add(name)
        domains = _domains(t)
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
        forecast_days = t.get("forecast_days", int, 90)
        if forecast_days < 0:
            raise t.err("forecast_days", "must be >= 0 (days before a scheduled distrust)")
        ch_raw = t.get("challenge", dict, {})
        ct = Table(file, f"{t.where}.challenge", ch_raw)
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
            forecast_days=forecast_days,
        ))
        t.check_unknown()

    return Config(path=Path(file), store=store, database=database, cas=cas, servers=servers,
                  sites=tuple(sites), daemon=daemon, raw=dict(raw))
