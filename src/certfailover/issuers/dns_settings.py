"""A site's DNS-01 settings: the `[site.challenge]` keys of the two DNS challenge types, and
the solver they make. Parsed from a `tables.Table` (errors name file, table and key); the
TSIG secret is an `env:`/`file:` reference, resolved here and never shown.

    type = "dns-01-rfc2136"                  type = "dns-01-command"
    server = "192.0.2.53:53"                 command = ["/usr/local/bin/dns-hook", "--x"]
    key_name = "certfailover."               timeout = 60
    key_secret = "env:TSIG_SECRET"
    key_algorithm = "hmac-sha256"
    zone = "example.com"            (optional: found by SOA)
    nameserver_port = 53            (where the zone's NS set is asked)
    ttl = 60
    timeout = 10                    (each DNS operation)
    propagation_timeout = 120
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..names import nameserver
from ..tables import Secret, Table, resolve_secret

if TYPE_CHECKING:  # dnspython is imported only when a solver is made, not to load a config
    from .dns01 import Dns01Solver

__all__ = [
    "DNS_CHALLENGES",
    "DnsChallenge",
    "clean_leftovers",
    "journal_dir",
    "make_solver",
    "parse_dns_challenge",
]

log = logging.getLogger(__name__)

DNS_CHALLENGES = ("dns-01-rfc2136", "dns-01-command")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1",
                   "hmac-md5")


@dataclass(frozen=True)
class DnsChallenge:
    type: str
    server: str = ""  # host:port (rfc2136)
    key_name: str = ""
    key_secret: Secret | None = None
    key_algorithm: str = "hmac-sha256"
    zone: str | None = None
    nameserver_port: int = 53
    ttl: int = 60
    timeout: float = 10.0
    propagation_timeout: float = 120.0
    command: tuple[str, ...] = ()


def _positive(t: Table, key: str, default: float) -> float:
    value = float(t.get(key, float, default))
    if value <= 0:
        raise t.err(key, "must be > 0 seconds")
    return value


def _port(t: Table, key: str, value: int) -> int:
    if not 0 < value < 65536:
        raise t.err(key, f"{value} is not a port (1-65535)")
    return value


def _server(t: Table) -> str:
    text: str = t.get("server", str, required=True)
    try:
        host, port = nameserver(text)
    except ValueError as exc:
        raise t.err("server", f"{exc}: give the primary server's IP address, e.g. "
                              "'192.0.2.53:53'") from None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_dns_challenge(t: Table, *, env: Mapping[str, str], base: Path) -> DnsChallenge:
    """The DNS keys of `t` (a `[site.challenge]` table whose `type` is one of DNS_CHALLENGES).
    Marks the keys it reads as used; the caller runs `t.check_unknown()`."""
    ctype: str = t.get("type", str, required=True)
    if ctype not in DNS_CHALLENGES:
        raise t.err("type", f"{ctype!r} is not one of {', '.join(DNS_CHALLENGES)}")
    if ctype == "dns-01-command":
        argv = t.str_list("command", nonempty=True)
        first = Path(argv[0]).expanduser()
        if "/" in argv[0] and not first.is_absolute():
            first = base / first
            argv = (str(first), *argv[1:])
        return DnsChallenge(type=ctype, command=argv, timeout=_positive(t, "timeout", 60.0))
    key_name: str = t.get("key_name", str, required=True)
    if not key_name.strip() or any(c.isspace() for c in key_name):
        raise t.err("key_name", f"{key_name!r} is not a TSIG key name")
    secret = resolve_secret(t.get("key_secret", str, required=True), t, "key_secret", env)
    try:
        if not base64.b64decode(secret.value, validate=True):
            raise ValueError("empty")
    except (binascii.Error, ValueError):
        raise t.err("key_secret", f"the secret of TSIG key {key_name!r} ({secret.source}) is "
                                  "not base64 (as tsig-keygen prints it)") from None
    algorithm: str = t.get("key_algorithm", str, "hmac-sha256").lower()
    if algorithm not in TSIG_ALGORITHMS:
        raise t.err("key_algorithm", f"{algorithm!r} is not one of {', '.join(TSIG_ALGORITHMS)}")
    zone = t.get("zone", str, None)
    if zone is not None and (not zone.strip(".") or "*" in zone or any(c.isspace() for c in zone)):
        raise t.err("zone", f"{zone!r} is not a zone name")
    ttl: int = t.get("ttl", int, 60)
    if ttl < 0:
        raise t.err("ttl", "must be >= 0")
    return DnsChallenge(
        type=ctype,
        server=_server(t),
        key_name=key_name if key_name.endswith(".") else key_name + ".",
        key_secret=secret,
        key_algorithm=algorithm,
        zone=zone.strip(".").lower() if zone else None,
        nameserver_port=_port(t, "nameserver_port", t.get("nameserver_port", int, 53)),
        ttl=ttl,
        timeout=_positive(t, "timeout", 10.0),
        propagation_timeout=_positive(t, "propagation_timeout", 120.0),
    )


def journal_dir(store: Path) -> Path:
    """Where the DNS-01 journal of a store lives."""
    return Path(store) / "dns01"


def make_solver(dns: DnsChallenge, store: Path) -> Dns01Solver:
    from .dns01 import CommandSolver, Journal, Rfc2136Solver, TsigKey
    journal = Journal(journal_dir(store))
    if dns.type == "dns-01-command":
        return CommandSolver(dns.command, timeout=dns.timeout, journal=journal)
    assert dns.key_secret is not None
    return Rfc2136Solver(
        dns.server, TsigKey(dns.key_name, dns.key_secret.value, dns.key_algorithm),
        zone=dns.zone, nameserver_port=dns.nameserver_port, ttl=dns.ttl, timeout=dns.timeout,
        propagation_timeout=dns.propagation_timeout, journal=journal)


def clean_leftovers(challenges: Iterable[DnsChallenge], store: Path) -> int:
    """At start: remove the TXT records of gone processes for every configured DNS solver
    (dns01.py, journal); never raises (a record that cannot be removed stays journaled)."""
    done = 0
    for dns in dict.fromkeys(challenges):  # the same settings in several sites: once
        try:
            done += make_solver(dns, store).clean_leftovers()
        except Exception as exc:  # noqa: BLE001 - a start must not fail over DNS cleanup
            log.warning("DNS-01 leftovers of %s not cleaned: %s", dns.type, exc)
    return done
