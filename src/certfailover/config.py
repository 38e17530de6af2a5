"""TOML configuration -> frozen model. Every error names the file, the table and the key.

Secrets (EAB HMAC keys, webhook secrets) are given as references, never inline:
"env:NAME" reads an environment variable, "file:/path" reads a file. They are resolved when
loaded and never printed (`repr` hides them).

`load` parses and validates every table into a typed, frozen Config before anything is
created (no store, no directory, no thread): one function per table below; `[[server]]`
tables through their adapter's check (servers.registry.check_spec), `[notify]` through
notify.settings.parse. The rest of certfailover reads the typed values, never the TOML.
Site domains are normalised to lowercase A-labels without a trailing dot (normalize_domain);
a site's `trust` entries become sitetrust.PemBundle / sitetrust.Program.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import idna

from .caacheck import CAASettings
from .caacheck import from_table as caa_settings
from .ct.settings import CTSettings
from .ct.settings import from_table as ct_settings
from .errors import CertFailoverError, ConfigError
from .fleet.settings import FleetSettings, fleet_settings
from .health import SYSTEM_BUNDLE
from .issuers.dns_settings import DNS_CHALLENGES, DnsChallenge, parse_dns_challenge
from .metrics import parse_listen
from .model import RevocationMode
from .notify.settings import NotifySettings
from .notify.settings import parse as parse_notify
from .schedule import Intervals, parse_duration
from .servers.base import Endpoint, SpecError
from .servers.registry import check_spec
from .sitetrust import PemBundle, Program, TrustAnchor
from .tables import Secret, Table, resolve_secret
from .trust.programs import KNOWN_PROGRAMS
from .trust.sources.load import SourceSpec
from .web.settings import WebSettings, web_settings

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
CHALLENGES = ("http-01-webroot", "http-01-standalone", *DNS_CHALLENGES)
REVOCATION_MODES = tuple(m.value for m in RevocationMode)
DEFAULT_PATH = Path("certfailover.toml")
#: longest site and CA name: the `site` and `ca` columns of store/db.py are String(100)
NAME_MAX = 100
#: top-level tables, each parsed here into a typed part of Config
TABLES = ("store", "daemon", "ca", "server", "site", "schedule", "metrics", "trust", "notify",
          "web", "ct", "fleet", "caa")
#: the system trust bundle as a site's `trust = ["system"]` names it
SYSTEM = PemBundle(SYSTEM_BUNDLE, "system")
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
    #: orders to this CA per hour, all sites together (None: no cap); see issuance.hold
    max_orders_per_hour: int | None = None


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
    dns: DnsChallenge | None = None  # the DNS-01 types' settings (issuers/dns_settings.py)


@dataclass(frozen=True)
class SiteConfig:
    name: str
    domains: tuple[str, ...]
    cas: tuple[str, ...]
    server: str | None
    endpoints: tuple[Endpoint, ...]
    challenge: ChallengeConfig
    key_type: str = "ec-p256"
    trust: tuple[TrustAnchor, ...] = (SYSTEM,)
    min_standbys: int = 1
    renew_fraction: float = 1 / 3
    revocation: RevocationMode = RevocationMode.SOFT_FAIL
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
    switch_backoff: float = 30.0  # first wait after a switch rolled back or failed, doubling
    switch_backoff_cap: float = 300.0
    switch_before_expiry: float | None = None  # None: 2 intervals, at least 60 s

    @property
    def expiry_margin(self) -> float:
        """How long before notAfter a site leaves its certificate at the latest."""
        if self.switch_before_expiry is not None:
            return self.switch_before_expiry
        return max(60.0, 2 * self.interval)


@dataclass(frozen=True)
class MetricsConfig:
    listen: tuple[str, int] | None = None  # None: no metrics endpoint


@dataclass(frozen=True)
class TrustSettings:
    """The `[trust]` table: the root-program snapshot the checks read, and its refresh."""

    snapshot: Path | None = None  # None: $CERTFAILOVER_TRUST_SNAPSHOT or the packaged one
    sources: tuple[SourceSpec, ...] = ()
    pools: tuple[str, ...] = ()
    refresh: timedelta = timedelta(days=1)
    allow_shrink: bool = False


@dataclass(frozen=True)
class Config:
    path: Path
    store: Path
    database: str
    cas: Mapping[str, CAConfig]
    servers: Mapping[str, ServerConfig]
    sites: tuple[SiteConfig, ...]
    daemon: DaemonConfig
    schedule: Intervals = field(default_factory=Intervals)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    trust: TrustSettings = field(default_factory=TrustSettings)
    notify: NotifySettings | None = None  # None: no [notify] table, events are only stored
    web: WebSettings = field(default_factory=WebSettings)  # the status page (web/settings.py)
    ct: CTSettings | None = None  # None: no [ct] table, no CT watch (ct/settings.py)
    caa: CAASettings | None = None  # None: no [caa] table, no CAA check (caacheck.py)
    fleet: FleetSettings | None = None  # None: no [fleet] table, single host (fleet/settings.py)

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


def _domains(t: Table, *, wildcards: bool = False) -> tuple[str, ...]:
    """The site's `domains`, normalised; errors name the entry ("domains[2]", from 0).
    `*.name` (RFC 8555: the CA validates `name`) only with `wildcards` (a DNS challenge), and
    not first (the handshake's SNI)."""
    seen: dict[str, int] = {}
    for i, text in enumerate(t.str_list("domains", nonempty=True)):
        wild = text.startswith("*.")
        if wild and "*" in text[2:] or not wild and "*" in text and wildcards:
            raise t.err(f"domains[{i}]", f"{text!r}: '*' only as the whole left-most label "
                                         "('*.example.com')")
        if wild and not wildcards:
            raise t.err(f"domains[{i}]", f"{text!r} {WILDCARD_MESSAGE}")
        if wild and i == 0:
            raise t.err("domains[0]", f"{text!r}: the first name is the one the handshake asks "
                                      "for (SNI); put a name without '*' first")
        try:
            name = ("*." if wild else "") + normalize_domain(text[2:] if wild else text)
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
    return parse(raw, file=file, base=path.parent, env=env)


def parse(raw: Mapping[str, Any], *, file: str, base: Path, env: Mapping[str, str]) -> Config:
    """Every table of the file, each by its own function; creates nothing. ConfigError (naming
    the file, the table and the key) at the first bad value."""
    _check_top_level(raw, file)
    store, database = _store(Table(file, "[store]", raw.get("store", {})), base)
    cas = _cas(_array(raw, "ca", file), file, base, env)
    servers = _servers(_array(raw, "server", file), file)
    sites = _sites(_array(raw, "site", file), file, base, cas, servers, env)
    notify = raw.get("notify")
    return Config(
        path=Path(file), store=store, database=database, cas=cas, servers=servers, sites=sites,
        daemon=_daemon(Table(file, "[daemon]", raw.get("daemon", {}))),
        schedule=_schedule(Table(file, "[schedule]", raw.get("schedule", {}))),
        metrics=_metrics(Table(file, "[metrics]", raw.get("metrics", {}))),
        trust=_trust(Table(file, "[trust]", raw.get("trust", {})), base, store),
        notify=None if notify is None else _notify(Table(file, "[notify]", notify), env),
        web=web_settings(Table(file, "[web]", raw.get("web", {})), env),
        ct=ct_settings(Table(file, "[ct]", raw.get("ct", {})), base=base,
                       sites=[s.name for s in sites]),
        caa=caa_settings(Table(file, "[caa]", raw.get("caa", {})), cas=cas),
        fleet=None if raw.get("fleet") is None else fleet_settings(
            Table(file, "[fleet]", raw["fleet"]), store_database=database, env=env),
    )


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
    return _duration(t, key, timedelta(seconds=default)).total_seconds()


def _duration(t: Table, key: str, default: timedelta) -> timedelta:
    raw = t.get(key, (str, int, float), None)
    if raw is None:
        return default
    try:
        return parse_duration(raw)
    except ValueError as exc:
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


def _store(t: Table, base: Path) -> tuple[Path, str]:
    directory = t.get("directory", str, "/var/lib/certfailover")
    if not directory.strip():
        raise t.err("directory", "must not be empty")
    store = _path(directory, base)
    database = t.get("database", str, f"sqlite:///{store / 'state.db'}")
    if not database.strip():
        raise t.err("database", "must not be empty")
    t.check_unknown()
    return store, database


def _daemon(t: Table) -> DaemonConfig:
    margin = t.get("switch_before_expiry", float, None)
    daemon = DaemonConfig(
        interval=t.get("interval", float, 300.0),
        issue_timeout=t.get("issue_timeout", float, 120.0),
        verify_timeout=t.get("verify_timeout", float, 10.0),
        max_orders=t.get("max_orders", int, 4),
        orders_window=_seconds(t, "orders_window", 7 * 86400.0),
        order_backoff=_seconds(t, "order_backoff", 60.0),
        order_backoff_cap=_seconds(t, "order_backoff_cap", 6 * 3600.0),
        switch_backoff=_seconds(t, "switch_backoff", 30.0),
        switch_backoff_cap=_seconds(t, "switch_backoff_cap", 300.0),
        switch_before_expiry=None if margin is None else float(margin),
    )
    for key in ("interval", "issue_timeout", "verify_timeout", "orders_window", "order_backoff",
                "order_backoff_cap", "switch_backoff", "switch_backoff_cap"):
        if getattr(daemon, key) <= 0:
            raise t.err(key, "must be > 0 seconds")
    if daemon.max_orders < 1:
        raise t.err("max_orders", "must be at least 1")
    if daemon.switch_before_expiry is not None and daemon.switch_before_expiry < 0:
        raise t.err("switch_before_expiry", "must be >= 0 seconds")
    if daemon.order_backoff_cap < daemon.order_backoff:
        raise t.err("order_backoff_cap", "must be >= order_backoff")
    if daemon.switch_backoff_cap < daemon.switch_backoff:
        raise t.err("switch_backoff_cap", "must be >= switch_backoff")
    t.check_unknown()
    return daemon


def _ca(t: Table, name: str, base: Path, env: Mapping[str, str]) -> CAConfig:
    directory = t.url("directory", t.get("directory", str, required=True), "an ACME directory")
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
    ca = CAConfig(
        name=name, directory=directory, email=t.get("email", str, None), eab_kid=kid,
        eab_hmac_key=resolve_secret(hmac_ref, t, "eab_hmac_key", env) if hmac_ref else None,
        ca_bundle=bundle_path, preferred_chain=t.get("preferred_chain", str, None),
        crl_urls=crl_urls, ari_url=ari_url,
        crl_sign_required=t.get("crl_sign_required", bool, True),
        max_orders_per_hour=t.get("max_orders_per_hour", int, None),
    )
    if ca.max_orders_per_hour is not None and ca.max_orders_per_hour < 1:
        raise t.err("max_orders_per_hour", "must be a positive integer (leave it out for no cap)")
    t.check_unknown()
    return ca


def _cas(items: list[Any], file: str, base: Path, env: Mapping[str, str]) -> dict[str, CAConfig]:
    cas: dict[str, CAConfig] = {}
    for i, item in enumerate(items):
        t = Table(file, f"[[ca]] #{i + 1}", item)
        name = t.name(max_len=NAME_MAX)
        t.where = f"[[ca]] {name!r}"
        if name in cas:
            raise t.err("name", "duplicate CA name")
        cas[name] = _ca(t, name, base, env)
    return cas


def _servers(items: list[Any], file: str) -> dict[str, ServerConfig]:
    """Each `[[server]]` table, checked by its adapter type (servers.registry.check_spec)."""
    servers: dict[str, ServerConfig] = {}
    for i, item in enumerate(items):
        t = Table(file, f"[[server]] #{i + 1}", item)
        name = t.name()
        t.where = f"[[server]] {name!r}"
        if name in servers:
            raise t.err("name", "duplicate server name")
        typ = t.get("type", str, required=True)
        try:
            check_spec(item)
        except SpecError as exc:
            raise t.err(exc.key, exc.message) from None
        except ValueError as exc:  # an adapter's own check without a key
            raise t.err("", str(exc)) from None
        servers[name] = ServerConfig(name=name, type=typ, spec=dict(item))
    return servers


def _trust_list(t: Table, base: Path) -> tuple[TrustAnchor, ...]:
    """`trust`: "system", PEM bundle paths (with a "/" or ending in .pem), root programs."""
    out: list[TrustAnchor] = []
    for i, x in enumerate(t.str_list("trust", ("system",), nonempty=True)):
        if x == "system":
            out.append(SYSTEM)
        elif "/" in x or x.endswith(".pem"):
            path = _path(x, base)
            if not path.is_file():
                raise t.err(f"trust[{i}]", f"trust bundle {path} does not exist")
            out.append(PemBundle(path))
        elif x in KNOWN_PROGRAMS:
            out.append(Program(x))
        else:
            raise t.err(f"trust[{i}]", f"{x!r} is not 'system', a PEM bundle path or a root "
                        f"program ({', '.join(sorted(KNOWN_PROGRAMS))})")
    if len(set(out)) != len(out):
        raise t.err("trust", "lists a trust store twice")
    return tuple(out)


def _challenge(t: Table, base: Path, env: Mapping[str, str]) -> ChallengeConfig:
    ct = Table(t.file, f"{t.where}.challenge", t.get("challenge", dict, {}))
    ctype = ct.get("type", str, "http-01-standalone")
    if ctype not in CHALLENGES:
        raise ct.err("type", f"{ctype!r} is not one of {', '.join(CHALLENGES)}")
    if ctype in DNS_CHALLENGES:
        dns = parse_dns_challenge(ct, env=env, base=base)
        ct.check_unknown()
        return ChallengeConfig(ctype, dns=dns)
    webroot = ct.get("webroot", str, None)
    if ctype == "http-01-webroot" and not webroot:
        raise ct.err("webroot", "is required for http-01-webroot")
    lep = parse_endpoint(ct.get("listen", str, "0.0.0.0:80"), ct, "listen")
    ct.check_unknown()
    return ChallengeConfig(ctype, _path(webroot, base) if webroot else None, lep.host, lep.port)


def _site(t: Table, name: str, base: Path, cas: Mapping[str, CAConfig],
          servers: Mapping[str, ServerConfig], env: Mapping[str, str]) -> SiteConfig:
    challenge = _challenge(t, base, env)
    domains = _domains(t, wildcards=challenge.dns is not None)
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
    min_standbys = t.get("min_standbys", int, 1)
    if min_standbys < 0:
        raise t.err("min_standbys", "must be >= 0")
    if min_standbys >= len(site_cas) and len(site_cas) > 0 and min_standbys > 0:
        raise t.err("min_standbys", f"needs at least {min_standbys + 1} CAs in 'cas' to keep "
                    f"{min_standbys} standby(s) from CAs other than the active one's")
    renew_fraction = t.get("renew_fraction", float, 1 / 3)
    if not 0 < renew_fraction < 1:
        raise t.err("renew_fraction", "must be between 0 and 1 (fraction of lifetime left)")
    mode = t.get("revocation", str, RevocationMode.SOFT_FAIL.value)
    if mode not in REVOCATION_MODES:
        raise t.err("revocation", f"must be one of {', '.join(REVOCATION_MODES)}")
    revocation = RevocationMode(mode)
    forecast_days = t.get("forecast_days", int, 90)
    if forecast_days < 0:
        raise t.err("forecast_days", "must be >= 0 (days before a scheduled distrust)")
    site = SiteConfig(
        name=name, domains=domains, cas=site_cas, server=server, endpoints=endpoints,
        challenge=challenge, key_type=key_type, trust=_trust_list(t, base),
        min_standbys=min_standbys, renew_fraction=renew_fraction, revocation=revocation,
        switch_back=t.get("switch_back", bool, False), forecast_days=forecast_days,
    )
    t.check_unknown()
    return site


def _sites(items: list[Any], file: str, base: Path, cas: Mapping[str, CAConfig],
           servers: Mapping[str, ServerConfig], env: Mapping[str, str]) -> tuple[SiteConfig, ...]:
    sites: dict[str, SiteConfig] = {}
    for i, item in enumerate(items):
        t = Table(file, f"[[site]] #{i + 1}", item)
        name = t.name(max_len=NAME_MAX)
        t.where = f"[[site]] {name!r}"
        if name in sites:
            raise t.err("name", "duplicate site name")
        sites[name] = _site(t, name, base, cas, servers, env)
    return tuple(sites.values())


def _schedule(t: Table) -> Intervals:
    """`[schedule]`: schedule.Intervals; durations as "6h" / seconds, jitter and backoff_factor
    as numbers. The check periods (SCHEDULE_PERIODS) must be > 0."""
    values: dict[str, Any] = {}
    for f in fields(Intervals):
        if f.name not in t.data:
            continue
        if f.name in ("jitter", "backoff_factor"):
            values[f.name] = t.get(f.name, float)
        else:
            values[f.name] = _duration(t, f.name, timedelta(0))
    t.check_unknown()
    for key in SCHEDULE_PERIODS:
        if key in values and values[key] <= timedelta(0):
            raise t.err(key, "must be > 0 (how often to check)")
    try:
        return replace(Intervals(), **values)
    except ValueError as exc:  # the relations between keys (Intervals.__post_init__)
        raise t.err("", str(exc)) from None


def _metrics(t: Table) -> MetricsConfig:
    """`[metrics]`: `listen = "host:port"`; no table or no key: metrics off."""
    value = t.get("listen", str, None)
    t.check_unknown()
    if value is None:
        return MetricsConfig()
    try:
        return MetricsConfig(parse_listen(value))
    except ValueError as exc:
        raise t.err("listen", str(exc)) from None


def _trust(t: Table, base: Path, store: Path) -> TrustSettings:
    """`[trust]`: sources ("program=URL or path"), pools, refresh, snapshot, allow_shrink
    (see trust/refresh.py). With sources and no snapshot: <store>/trust-snapshot.json.gz."""
    sources = t.str_list("sources", ())
    specs: list[SourceSpec] = []
    for i, text in enumerate(sources):
        try:
            specs.append(SourceSpec.parse(text))
        except CertFailoverError as exc:
            raise t.err(f"sources[{i}]", str(exc)) from None
    refresh = _duration(t, "refresh", timedelta(days=1))
    if refresh <= timedelta(0):
        raise t.err("refresh", "must be positive")
    snap = t.get("snapshot", str, None)
    pools = t.str_list("pools", ())
    allow_shrink = t.get("allow_shrink", bool, False)
    t.check_unknown()
    path = _path(snap, base) if snap else (store / "trust-snapshot.json.gz" if specs else None)
    return TrustSettings(path, tuple(specs), pools, refresh, allow_shrink)


def _notify(t: Table, env: Mapping[str, str]) -> NotifySettings:
    """`[notify]` (notify.settings.parse); a notifier's own check is a ConfigError too."""
    try:
        return parse_notify(t.data, file=t.file, env=env)
    except ValueError as exc:
        raise t.err("", str(exc)) from None
