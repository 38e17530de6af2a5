"""CAA per site and CA, wired into certfailover: the `[caa]` settings, the gate (the latest
verdict per site and CA, refreshed off the tick, read by the engine before it orders), and the
`caa` check (a finding on the certificates of a CA that CAA forbids: its standby cannot be
renewed).

    [caa]
    resolver = ["127.0.0.1:8053"]   # nameservers ("ip" or "ip:port"); default: the system's
    interval = "1h"                 # re-check every ...
    timeout = 10                    # seconds per DNS lookup (total)
    identities = { a = ["letsencrypt.org"] }   # per CA; default: its ACME directory's
                                               # meta.caaIdentities
    accounts = { a = "https://acme.example/acct/1" }  # per CA: the account URL (RFC 8657)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import caa, net
from .checks import CertMaterial, CheckContext
from .model import Finding, Severity, Signal
from .names import nameserver
from .schedule import parse_duration
from .tables import Table

log = logging.getLogger(__name__)

__all__ = ["CAACheck", "CAAGate", "CAASettings", "SiteVerdict", "acme_method", "from_table"]

CHECK = "caa"


@dataclass(frozen=True)
class CAASettings:
    resolver: tuple[str, ...] = ()
    interval: float = 3600.0
    timeout: float = 10.0
    identities: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    accounts: Mapping[str, str] = field(default_factory=dict)


def from_table(t: Table, *, cas: Iterable[str]) -> CAASettings | None:
    """`[caa]` (None when absent: no CAA check). Unknown CA names are errors."""
    if not t.data:
        return None
    known = set(cas)
    resolver = t.str_list("resolver", ())
    for i, ns in enumerate(resolver):
        try:
            nameserver(ns)
        except ValueError as exc:
            raise t.err(f"resolver[{i}]", str(exc)) from None

    def seconds(key: str, default: float) -> float:
        raw = t.get(key, (int, float, str), default)
        try:
            value = parse_duration(raw).total_seconds()
        except (ValueError, TypeError) as exc:
            raise t.err(key, str(exc)) from None
        if value <= 0:
            raise t.err(key, "must be > 0")
        return value

    identities: dict[str, tuple[str, ...]] = {}
    for ca, ids in t.get("identities", dict, {}).items():
        if ca not in known:
            raise t.err(f"identities.{ca}", f"{ca!r} is not a configured [[ca]]")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise t.err(f"identities.{ca}", "must be a list of domain names")
        identities[ca] = tuple(i.lower().rstrip(".") for i in ids)
    accounts: dict[str, str] = {}
    for ca, uri in t.get("accounts", dict, {}).items():
        if ca not in known:
            raise t.err(f"accounts.{ca}", f"{ca!r} is not a configured [[ca]]")
        accounts[ca] = t.url(f"accounts.{ca}", uri, "an ACME account") if isinstance(uri, str) \
            else _raise(t, f"accounts.{ca}", "must be the account URL")
    out = CAASettings(resolver=resolver, interval=seconds("interval", 3600.0),
                      timeout=seconds("timeout", 10.0), identities=identities, accounts=accounts)
    t.check_unknown()
    return out


def _raise(t: Table, key: str, msg: str) -> str:
    raise t.err(key, msg)


def acme_method(challenge_type: str) -> str:
    """The RFC 8555 challenge type a site's `[site.challenge] type` uses."""
    return "dns-01" if challenge_type.startswith("dns-01") else "http-01"


@dataclass(frozen=True)
class SiteVerdict:
    """CAA for one site and one CA: allowed (True/False), or unknown (None) with why."""

    site: str
    ca: str
    allowed: bool | None
    reason: str
    names: tuple[caa.Verdict, ...] = ()


@dataclass(frozen=True)
class GateSite:
    name: str
    domains: tuple[str, ...]
    cas: tuple[str, ...]
    method: str


class CAAGate:
    """The latest CAA verdict per (site, CA). `refresh()` does the DNS (and, for CAs without
    configured identities, the ACME directory: `directories` maps a CA to its URL and the
    `verify` of the request) lookups; `forbids()` only reads."""

    def __init__(self, settings: CAASettings, sites: Sequence[GateSite],
                 directories: Mapping[str, tuple[str, str | bool]], *,
                 account_uri: Callable[[str], str | None] | None = None,
                 on_change: Callable[[SiteVerdict, SiteVerdict | None], None] | None = None) -> None:
        self.settings, self.sites, self.directories = settings, tuple(sites), dict(directories)
        self.account_uri, self.on_change = account_uri, on_change
        self._verdicts: dict[tuple[str, str], SiteVerdict] = {}
        self._identities: dict[str, tuple[str, ...]] = dict(settings.identities)
        self._id_errors: dict[str, caa.CAALookupError] = {}  # this pass's failed directories
        self._lock = threading.Lock()

    def __call__(self, site: str, ca: str) -> str | None:
        """The engine's hook (Engine.caa): why no order may go from `site` to `ca`."""
        return self.forbids(site, ca)

    def current(self) -> list[SiteVerdict]:
        with self._lock:
            return list(self._verdicts.values())

    def verdict(self, site: str, ca: str) -> SiteVerdict | None:
        with self._lock:
            return self._verdicts.get((site, ca))

    def forbids(self, site: str, ca: str) -> str | None:
        """Why CAA forbids `ca` for `site` (None: allowed, unknown or not checked yet)."""
        v = self.verdict(site, ca)
        return v.reason if v is not None and v.allowed is False else None

    def identities(self, ca: str) -> tuple[str, ...]:
        """The CA's CAA identities: configured, else its directory's meta.caaIdentities."""
        if ca in self._identities:
            return self._identities[ca]
        if ca in self._id_errors:  # asked once per pass: a dead directory is not asked per site
            raise self._id_errors[ca]
        if ca not in self.directories:
            raise caa.CAALookupError(f"CA {ca}: no directory to read caaIdentities from")
        url, verify = self.directories[ca]
        try:
            with net.deadline(self.settings.timeout):
                resp = net.session().get(url, timeout=self.settings.timeout, verify=verify)
            resp.raise_for_status()
            doc = resp.json()
            meta = (doc.get("meta") or {}) if isinstance(doc, dict) else {}
        except (OSError, ValueError) as exc:
            self._id_errors[ca] = caa.CAALookupError(
                f"CA {ca}: cannot read caaIdentities from {url}: {exc}")
            raise self._id_errors[ca] from None
        ids = meta.get("caaIdentities") if isinstance(meta, dict) else None
        if not isinstance(ids, list) or not ids:
            self._id_errors[ca] = caa.CAALookupError(
                f"CA {ca}: its directory {url} lists no caaIdentities; set [caa] identities.{ca}")
            raise self._id_errors[ca]
        self._identities[ca] = tuple(str(i).lower().rstrip(".") for i in ids)
        return self._identities[ca]

    def check(self, site: GateSite, ca: str,
              query: Callable[[str], list[caa.CAARecord]]) -> SiteVerdict:
        ids: tuple[str, ...] | None = None
        no_ids = ""
        try:
            ids = self.identities(ca)
        except caa.CAALookupError as exc:
            no_ids = str(exc)  # only matters where CAA restricts issuance
        account = self.settings.accounts.get(ca) or (
            self.account_uri(ca) if self.account_uri is not None else None)
        verdicts = []
        for name in site.domains:
            try:
                at, records = caa.relevant(name, query)
            except caa.CAALookupError as exc:
                return SiteVerdict(site.name, ca, None, f"CAA for {name}: {exc}")
            v = caa.evaluate(name, at, records, identities=ids or (), account_uri=account,
                             method=site.method)
            if ids is None and not v.allowed and "critical tag" not in v.reason:
                return SiteVerdict(site.name, ca, None, f"CAA at {at} restricts issuance for "
                                   f"{name}, and {no_ids}")
            verdicts.append(v)
        bad = [v for v in verdicts if not v.allowed]
        if bad:
            return SiteVerdict(site.name, ca, False, f"CA {ca} may not issue for {site.name}: "
                               + "; ".join(v.reason for v in bad), tuple(verdicts))
        return SiteVerdict(site.name, ca, True, f"CAA permits CA {ca} for every name of "
                           f"{site.name}", tuple(verdicts))

    def refresh(self, budget: float | None = None) -> list[SiteVerdict]:
        """One pass over every (site, CA). Each lookup is bounded by `[caa] timeout`, a name or
        directory that failed is not asked again in the pass, and with `budget` the whole pass
        stops after that many seconds: the pairs not reached keep their last verdict."""
        resolver = caa.resolver_for(self.settings.resolver, self.settings.timeout)
        cache: dict[str, list[caa.CAARecord] | caa.CAALookupError] = {}
        self._id_errors.clear()
        end = None if budget is None else time.monotonic() + budget

        def query(name: str) -> list[caa.CAARecord]:
            if name not in cache:
                try:
                    cache[name] = caa.lookup(resolver, name, self.settings.timeout)
                except caa.CAALookupError as exc:
                    cache[name] = exc
            got = cache[name]
            if isinstance(got, caa.CAALookupError):
                raise got
            return got

        out: list[SiteVerdict] = []
        for site in self.sites:
            for ca in site.cas:
                if end is not None and time.monotonic() >= end:
                    log.warning("CAA: the pass ran past its %.0f s budget; %d verdict(s) are "
                                "from an earlier pass or not known yet", budget,
                                sum(len(s.cas) for s in self.sites) - len(out))
                    return out
                v = self.check(site, ca, query)
                with self._lock:
                    before = self._verdicts.get((site.name, ca))
                    self._verdicts[(site.name, ca)] = v
                if self.on_change is not None and (before is None or before.allowed != v.allowed):
                    try:
                        self.on_change(v, before)
                    except Exception:
                        log.exception("CAA change handler failed")
                out.append(v)
        return out


class CAAGateJob:
    """Refresh the gate every `[caa] interval` in its own thread."""

    def __init__(self, gate: CAAGate) -> None:
        self.gate = gate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="caa", daemon=True)

    def start(self) -> CAAGateJob:
        self._thread.start()
        return self

    def _run(self) -> None:  # the gate was refreshed (within a budget) when built: wait first
        while not self._stop.wait(self.gate.settings.interval):
            try:
                self.gate.refresh()
            except Exception:
                log.exception("CAA refresh failed")

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)


class CAACheck:
    """A WARN `caa` finding on a certificate whose CA CAA forbids for its site (it cannot be
    renewed from that CA); unknown CAA is a WARN "unknown". Reads the gate only (no DNS)."""

    name: ClassVar[str] = CHECK
    findings: ClassVar[frozenset[str]] = frozenset({CHECK})
    signals: ClassVar[Mapping[Signal, frozenset[str]]] = {Signal.EXPIRY: frozenset({CHECK})}
    remote: ClassVar[bool] = False

    def __init__(self, gate: CAAGate) -> None:
        self.gate = gate

    def run(self, material: CertMaterial, ctx: CheckContext) -> list[Finding]:
        c = material.cert
        v = self.gate.verdict(c.site, c.ca)
        if v is None:
            return []
        detail: dict[str, Any] = {"ca": c.ca, "names": {x.name: x.reason for x in v.names}}
        if v.allowed is False:
            return [Finding(CHECK, Severity.WARN, f"CAA forbids CA {c.ca}: {v.reason} (its "
                            "standby cannot be renewed; no order goes to it)", detail)]
        if v.allowed is None:
            return [Finding(CHECK, Severity.WARN, f"CAA unknown for CA {c.ca}: {v.reason}",
                            detail, known=False)]
        return [Finding(CHECK, Severity.OK, v.reason, detail)]
