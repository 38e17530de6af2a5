"""The `[fleet]` table: this process's role in a fleet sharing one PostgreSQL database.

    [fleet]
    role = "agent"                   # "controller" (checks, decisions, issuance) or "agent"
    host = "web1"                    # the agent's name in status (default: the host name)
    kek = "file:/etc/certfailover/kek"        # 32 bytes, hex or base64; never inline
    previous_keks = ["env:CF_OLD_KEK"]        # still accepted for reading during a rotation
    database = "postgresql+psycopg://..."     # default: [store] database
    poll = "30s"                     # agent: re-read the desired state at least this often
    prefetch = 2000                  # agent: standbys unsealed into the vault per pass (0: off)
    converge_timeout = "60s"         # controller: a switch no host verified fails by then, and
                                     # a host that has not switched by then is alerted
    lag_grace = "10s"                # controller: once one host verified a site, how long the
                                     # others may lag before the switch is done without them
    lease_ttl = "30s"                # controller: a dead controller's sites are taken over
                                     # after this (leases renewed every third of it)
    stale_after = "2m"               # status: a host that has not reported is shown stale
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..schedule import parse_duration
from ..tables import Table, resolve_secret
from .sealed import Keyring, kek_from_secret

__all__ = ["ROLES", "FleetSettings", "fleet_settings"]

ROLES = ("controller", "agent")


@dataclass(frozen=True)
class FleetSettings:
    role: str
    host: str
    keyring: Keyring = field(repr=False)
    database: str = field(repr=False)
    poll: float = 30.0
    converge_timeout: float = 60.0
    lag_grace: float = 10.0
    stale_after: float = 120.0
    prefetch: int = 2000
    lease_ttl: float = 30.0


def _seconds(t: Table, key: str, default: float) -> float:
    raw = t.get(key, (str, int, float), None)
    if raw is None:
        return default
    try:
        value = parse_duration(raw).total_seconds()
    except ValueError as exc:
        raise t.err(key, str(exc)) from None
    if value <= 0:
        raise t.err(key, "must be positive")
    return value


def fleet_settings(t: Table, *, store_database: str,
                   env: Mapping[str, str]) -> FleetSettings:
    """The `[fleet]` table; ConfigError names the file, table and key (never a key's value)."""
    role = t.get("role", str, required=True)
    if role not in ROLES:
        raise t.err("role", f"must be one of {', '.join(ROLES)}, not {role!r}")
    host = t.get("host", str, None) or socket.gethostname().split(".")[0]
    if "host" in t.data:
        host = t.name("host", max_len=100)
    current = resolve_secret(t.get("kek", str, required=True), t, "kek", env)
    try:
        kek = kek_from_secret(current)
    except ValueError as exc:
        raise t.err("kek", str(exc)) from None
    older = []
    for i, ref in enumerate(t.str_list("previous_keks", ())):
        key = f"previous_keks[{i}]"
        try:
            older.append(kek_from_secret(resolve_secret(ref, t, key, env)))
        except ValueError as exc:
            raise t.err(key, str(exc)) from None
    database = t.get("database", str, store_database)
    try:
        backend = sa.engine.make_url(database).get_backend_name()
    except sa.exc.ArgumentError:
        backend = ""
    if backend != "postgresql":
        raise t.err("database", "a fleet needs a shared PostgreSQL database "
                                "(postgresql+psycopg://user@host/db); set it here or in [store]")
    prefetch = t.get("prefetch", int, 2000)
    if prefetch < 0:
        raise t.err("prefetch", "must be 0 (no prefetch) or a positive number of records")
    settings = FleetSettings(
        role=role, host=host, keyring=Keyring(kek, tuple(k for k in older if k.id != kek.id)),
        database=database, poll=_seconds(t, "poll", 30.0),
        converge_timeout=_seconds(t, "converge_timeout", 60.0),
        lag_grace=_seconds(t, "lag_grace", 10.0),
        stale_after=_seconds(t, "stale_after", 120.0), prefetch=prefetch,
        lease_ttl=_seconds(t, "lease_ttl", 30.0))
    t.check_unknown()
    return settings
