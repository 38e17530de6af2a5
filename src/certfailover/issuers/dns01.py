"""DNS-01 challenge solvers (RFC 8555 section 8.4): RFC 2136 dynamic updates with TSIG, or a command.

For an identifier `example.com` (and for `*.example.com`: the CA validates the base name,
RFC 8555 section 7.1.3) the CA looks up TXT at `_acme-challenge.example.com` and expects the
base64url SHA-256 of the key authorization among the strings. A wildcard and its base name
need two TXT records at the same name: records are added, never replaced.

A solver is used in three steps by the ACME issuer: `present` every record of an order, `wait`
until they are published, answer the challenges; then `cleanup` each record (after success
and after failure). Every record added is first written to a journal (`<store>/dns01/`, one
small file per record, with the pid of the process that added it); a record whose process is
gone (a crash, a kill, an abandoned worker's process) is removed by `clean_leftovers`, which
runs at daemon start and before a solver's first record in a process.

Every DNS operation has a total deadline: a `deadline` argument (a `time.monotonic()` value,
the issuance's) and the solver's own `timeout` per operation, whichever comes first. An
unreachable server is a bounded TransientIssuanceError; a refusal (TSIG key unknown or wrong,
update not allowed) is an IssuanceError naming the server and the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update

from ..errors import IssuanceError, TransientIssuanceError
from ..names import nameserver
from ..store.files import atomic_write

__all__ = [
    "CommandSolver",
    "DeadlineReached",
    "Dns01Solver",
    "Journal",
    "Rfc2136Solver",
    "challenge_name",
]

log = logging.getLogger(__name__)

PREFIX = "_acme-challenge"
_POLL = 0.1  # between propagation checks, growing to 1 s


def challenge_name(identifier: str) -> str:
    """`_acme-challenge.<base name>`: `*.example.com` and `example.com` both give
    `_acme-challenge.example.com` (no trailing dot, lowercase)."""
    name = identifier.strip().lower().rstrip(".")
    name = name.removeprefix("*.")
    if not name or "*" in name:
        raise IssuanceError(f"DNS-01: {identifier!r} is not a name a TXT record can prove")
    return f"{PREFIX}.{name}"


@runtime_checkable
class Dns01Solver(Protocol):
    challenge_type: str  # "dns-01"
    cleanup_timeout: float  # seconds for one record's removal; an order's records share it

    def present(self, identifier: str, value: str, *, deadline: float) -> None: ...

    def wait(self, *, deadline: float) -> None: ...

    def cleanup(self, identifier: str, value: str, *, deadline: float | None = None) -> None: ...

    def clean_leftovers(self) -> int: ...


class DeadlineReached(TransientIssuanceError):
    """The deadline passed before a DNS step (the error before it is the one to report)."""


def _left(deadline: float, cap: float, what: str) -> float:
    left = min(cap, deadline - time.monotonic())
    if left <= 0:
        raise DeadlineReached(f"DNS-01: {what}: deadline reached")
    return left


# ------------------------------------------------------------------------------ journal


@dataclass(frozen=True)
class JournalEntry:
    path: Path
    owner: str
    name: str
    value: str
    pid: int


class Journal:
    """`<dir>/<hash>.json` per TXT record added and not yet removed."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, owner: str, name: str, value: str) -> Path:
        digest = hashlib.sha256(f"{owner}\0{name}\0{value}".encode()).hexdigest()[:32]
        return self.directory / f"{digest}.json"

    def add(self, owner: str, name: str, value: str) -> None:
        data = {"owner": owner, "name": name, "value": value, "pid": os.getpid(),
                "added": time.time()}
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self._path(owner, name, value), json.dumps(data).encode(), mode=0o600)

    def remove(self, owner: str, name: str, value: str) -> None:
        self._path(owner, name, value).unlink(missing_ok=True)

    def entries(self, owner: str) -> list[JournalEntry]:
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                entry = JournalEntry(path, str(data["owner"]), str(data["name"]),
                                     str(data["value"]), int(data["pid"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("DNS-01 journal: ignoring unreadable %s: %s", path, exc)
                continue
            if entry.owner == owner:
                out.append(entry)
        return out


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class _Journaled:
    """Journal bookkeeping shared by the solvers: `owner` names the DNS the records went to."""

    owner: str
    journal: Journal | None
    cleanup_timeout: float = 5.0  # one record's removal
    leftovers_budget: float = 30.0  # every leftover's removal together, at a start
    _cleaned = False
    _clean_lock: threading.Lock

    def _record(self, name: str, value: str) -> None:
        if self.journal is not None:
            self.journal.add(self.owner, name, value)

    def _forget(self, name: str, value: str) -> None:
        if self.journal is not None:
            self.journal.remove(self.owner, name, value)

    def _delete(self, name: str, value: str, deadline: float) -> None:
        raise NotImplementedError

    def _first_use(self) -> None:
        with self._clean_lock:
            if self._cleaned:
                return
            self._cleaned = True
        self.clean_leftovers()

    def clean_leftovers(self) -> int:
        """Remove the records a process that is gone added and never removed; returns how many.
        All of them within `leftovers_budget` seconds (each within `cleanup_timeout`): what is
        left then stays in the journal for the next start."""
        if self.journal is None:
            return 0
        done = 0
        end = time.monotonic() + self.leftovers_budget
        for entry in self.journal.entries(self.owner):
            if _alive(entry.pid):
                continue
            try:
                self._delete(entry.name, entry.value,
                             min(end, time.monotonic() + self.cleanup_timeout))
            except IssuanceError as exc:
                log.warning("DNS-01: cannot remove the leftover TXT %s (added by pid %d): %s",
                            entry.name, entry.pid, exc)
                continue
            entry.path.unlink(missing_ok=True)
            log.warning("DNS-01: removed the leftover TXT record %s (added by pid %d, which is "
                        "gone)", entry.name, entry.pid)
            done += 1
        return done

    def cleanup(self, identifier: str, value: str, *, deadline: float | None = None) -> None:
        """Remove one record within `cleanup_timeout` and by `deadline` (time.monotonic(): one
        deadline shared by an order's records); never raises (a record left behind stays in
        the journal, removed at the next start)."""
        name = challenge_name(identifier)
        end = time.monotonic() + self.cleanup_timeout
        try:
            self._delete(name, value, end if deadline is None else min(end, deadline))
        except IssuanceError as exc:
            log.warning("DNS-01: cannot remove TXT %s now (kept in the journal, removed at the "
                        "next start): %s", name, exc)
            return
        self._forget(name, value)


# ------------------------------------------------------------------------------ RFC 2136


@dataclass(frozen=True)
class TsigKey:
    name: str
    secret: str = field(repr=False)  # base64, never logged
    algorithm: str = "hmac-sha256"


class Rfc2136Solver(_Journaled):
    """TXT records by RFC 2136 UPDATE, TSIG-signed, sent over TCP to `server` (the primary).

    `zone`: the zone to update; None finds it by asking `server` for the SOA above the name.
    `wait` queries every authoritative server of the zone (its NS set, asked directly on
    `nameserver_port`, never a recursive cache) until each answers every record presented.
    """

    challenge_type = "dns-01"

    def __init__(self, server: str, key: TsigKey, *, zone: str | None = None,
                 nameserver_port: int = 53, ttl: int = 60, timeout: float = 10.0,
                 propagation_timeout: float = 120.0, journal: Journal | None = None) -> None:
        self.host, self.port = nameserver(server)
        self.key = key
        self.zone = dns.name.from_text(zone) if zone else None
        self.nameserver_port = nameserver_port
        self.ttl = ttl
        self.timeout = timeout
        self.propagation_timeout = propagation_timeout
        self.journal = journal
        self.owner = f"rfc2136:{self.host}:{self.port}:{key.name}"
        self._clean_lock = threading.Lock()
        self._pending: dict[str, set[str]] = {}
        self._zones: dict[str, dns.name.Name] = {}
        try:
            self._keyring = dns.tsigkeyring.from_text({key.name: key.secret})
        except (ValueError, dns.exception.DNSException) as exc:
            raise IssuanceError(f"DNS-01: TSIG key {key.name!r}: the secret is not valid "
                                f"base64 ({type(exc).__name__})") from None

    def __repr__(self) -> str:
        return f"Rfc2136Solver(server={self.host}:{self.port}, key={self.key.name!r})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the protocol ----------------------------------------------------------------
    def present(self, identifier: str, value: str, *, deadline: float) -> None:
        self._first_use()
        name = challenge_name(identifier)
        self._record(name, value)  # journal first: a crash after the update leaves a trace
        self._update(name, value, add=True, deadline=deadline)
        self._pending.setdefault(name, set()).add(value)

    def wait(self, *, deadline: float) -> None:
        """Until every authoritative server of each zone answers every presented value."""
        end = min(deadline, time.monotonic() + self.propagation_timeout)
        pending = {n: set(v) for n, v in self._pending.items()}
        self._pending.clear()
        servers: dict[str, list[str]] = {}
        for name in pending:
            zone = self._zone_for(name, end)
            key = zone.to_text()
            if key not in servers:
                servers[key] = self._nameservers(zone, end)
        delay = _POLL
        while True:
            missing = []
            for name, values in pending.items():
                for addr in servers[self._zones[name].to_text()]:
                    have = self._txt_at(addr, name, end)
                    if have is None or not values <= have:
                        missing.append(f"{addr}:{self.nameserver_port} ({name}"
                                       f"{': unreachable' if have is None else ''})")
            if not missing:
                return
            left = end - time.monotonic()
            if left <= 0:
                raise TransientIssuanceError(
                    f"DNS-01: TXT records not answered by every authoritative server within "
                    f"{self.propagation_timeout:.0f}s or the issue deadline: "
                    f"{', '.join(sorted(set(missing))[:5])}")
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 1.0)

    def _delete(self, name: str, value: str, deadline: float) -> None:
        self._pending.get(name, set()).discard(value)  # a failed attempt's: not waited for
        self._update(name, value, add=False, deadline=deadline)

    # -- DNS ---------------------------------------------------------------------------
    def _zone_for(self, name: str, deadline: float) -> dns.name.Name:
        if name in self._zones:
            return self._zones[name]
        if self.zone is not None:
            zone = self.zone
            if not dns.name.from_text(name).is_subdomain(zone):
                raise IssuanceError(f"DNS-01: {name} is not in the configured zone {zone}")
        else:
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = [self.host]
            res.port = self.port
            try:
                zone = dns.resolver.zone_for_name(
                    name, resolver=res, lifetime=_left(deadline, self.timeout, "zone lookup"))
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                raise TransientIssuanceError(f"DNS-01: {self.where}: no answer finding the "
                                             f"zone of {name}: {exc}") from None
            except dns.exception.DNSException as exc:
                raise IssuanceError(f"DNS-01: {self.where}: cannot find the zone of {name} "
                                    f"(set `zone`): {exc}") from exc
        self._zones[name] = zone
        return zone

    def _update(self, name: str, value: str, *, add: bool, deadline: float) -> None:
        zone = self._zone_for(name, deadline)
        what = f"{'add' if add else 'delete'} TXT {name}"
        upd = dns.update.UpdateMessage(zone, keyring=self._keyring, keyname=dns.name.from_text(self.key.name),
                                       keyalgorithm=self.key.algorithm)
        rel = dns.name.from_text(name).relativize(zone)
        rdata = _txt_rdata(value)
        if add:
            upd.add(rel, self.ttl, rdata)
        else:
            upd.delete(rel, rdata)
        try:
            resp = dns.query.tcp(upd, self.host, port=self.port,
                                 timeout=_left(deadline, self.timeout, f"{self.where}: {what}"))
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerBadTime,
                dns.tsig.PeerBadTruncation, dns.tsig.BadSignature) as exc:
            raise IssuanceError(
                f"DNS-01: {self.where} refused TSIG key {self.key.name!r} "
                f"({self.key.algorithm}): {exc} (check the key name and secret)") from None
        except dns.exception.Timeout:
            raise TransientIssuanceError(f"DNS-01: {self.where}: {what}: no answer in time "
                                         "(server unreachable?)") from None
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            raise TransientIssuanceError(
                f"DNS-01: {self.where}: {what}: {type(exc).__name__}: {exc}") from None
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            hint = (f" (is TSIG key {self.key.name!r} allowed to update TXT in {zone}?)"
                    if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH) else "")
            raise IssuanceError(f"DNS-01: {self.where}: {what}: "
                                f"{dns.rcode.to_text(rcode)}{hint}")
        log.info("DNS-01: %s at %s (zone %s, key %s)", what, self.where, zone, self.key.name)

    def _nameservers(self, zone: dns.name.Name, deadline: float) -> list[str]:
        """Addresses of the zone's NS set, asked of the primary: glue, else A/AAAA from the
        primary, else the system resolver."""
        resp = self._ask(self.host, self.port, zone, dns.rdatatype.NS, deadline)
        if resp is None:
            raise TransientIssuanceError(f"DNS-01: {self.where}: no answer for NS {zone}")
        names = [rd.target for rrset in resp.answer if rrset.rdtype == dns.rdatatype.NS
                 for rd in rrset]
        if not names:
            raise IssuanceError(f"DNS-01: {self.where}: zone {zone} has no NS records")
        glue: dict[dns.name.Name, list[str]] = {}
        for rrset in resp.additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                glue.setdefault(rrset.name, []).extend(rd.address for rd in rrset)
        addrs: list[str] = []
        for ns in names:
            found = glue.get(ns) or self._addresses(ns, deadline)
            if not found:
                raise TransientIssuanceError(f"DNS-01: no address for the name server {ns} of "
                                             f"zone {zone}")
            addrs.extend(a for a in found if a not in addrs)
        return addrs

    def _addresses(self, ns: dns.name.Name, deadline: float) -> list[str]:
        out: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            resp = self._ask(self.host, self.port, ns, rdtype, deadline)
            if resp is not None:
                out += [rd.address for rrset in resp.answer if rrset.rdtype == rdtype
                        for rd in rrset]
        if out:
            return out
        res = dns.resolver.Resolver()
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                ans = res.resolve(ns, rdtype, lifetime=_left(deadline, self.timeout, f"{ns}"),
                                  raise_on_no_answer=False)
            except dns.exception.DNSException:
                continue
            out += [rd.address for rd in ans]
        return out

    def _ask(self, host: str, port: int, name: dns.name.Name | str, rdtype: dns.rdatatype.RdataType,
             deadline: float) -> dns.message.Message | None:
        """One non-recursive query, UDP with TCP fallback; None if the server did not answer."""
        q = dns.message.make_query(name, rdtype)
        q.flags &= ~dns.flags.RD
        left = min(self.timeout, 2.0, deadline - time.monotonic())
        if left <= 0:
            return None
        try:
            resp, _ = dns.query.udp_with_fallback(q, host, port=port, timeout=left)
        except (OSError, EOFError, dns.exception.DNSException):
            return None
        return resp

    def _txt_at(self, addr: str, name: str, deadline: float) -> set[str] | None:
        resp = self._ask(addr, self.nameserver_port, name, dns.rdatatype.TXT, deadline)
        if resp is None or resp.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return None
        return {b"".join(rd.strings).decode("ascii", "replace") for rrset in resp.answer
                if rrset.rdtype == dns.rdatatype.TXT for rd in rrset}


def _txt_rdata(value: str) -> dns.rdata.Rdata:
    if not value or any(c in value for c in '"\\ ;') or not value.isascii():
        raise IssuanceError(f"DNS-01: {value[:64]!r} is not a base64url TXT value")
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{value}"')


# ------------------------------------------------------------------------------- command


class CommandSolver(_Journaled):
    """Any DNS, through a program of the operator's: `argv + [action, name, value]`.

    Contract (docs/dns01.md): `action` is `present` or `cleanup`; `name` is the absolute record
    name without a trailing dot (`_acme-challenge.example.com`); `value` the TXT string. The
    program adds the record (keeping other TXT records at that name) and exits 0 only once
    every authoritative server answers it; `cleanup` removes that one record and exits 0
    (also if it is already gone). Exit status not 0 is a failure and its stderr is reported
    (first 500 characters); a program still running after `timeout` seconds (or at the issue
    deadline) is killed and the issuance fails. stdin is empty; the environment is
    certfailover's plus CERTFAILOVER_DNS_ACTION, _NAME and _VALUE.
    """

    challenge_type = "dns-01"

    def __init__(self, argv: Sequence[str], *, timeout: float = 60.0,
                 journal: Journal | None = None) -> None:
        if not argv:
            raise IssuanceError("DNS-01 command: empty argv")
        self.argv = tuple(argv)
        self.timeout = timeout
        self.journal = journal
        self.owner = "command:" + json.dumps(self.argv)
        self._clean_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CommandSolver(argv={self.argv!r})"

    def present(self, identifier: str, value: str, *, deadline: float) -> None:
        self._first_use()
        name = challenge_name(identifier)
        _txt_rdata(value)
        self._record(name, value)
        self._run("present", name, value, deadline)

    def wait(self, *, deadline: float) -> None:
        return None  # `present` returns once the record is published (the contract)

    def _delete(self, name: str, value: str, deadline: float) -> None:
        self._run("cleanup", name, value, deadline)

    def _run(self, action: str, name: str, value: str, deadline: float) -> None:
        argv = [*self.argv, action, name, value]
        left = _left(deadline, self.timeout, f"command {self.argv[0]} {action} {name}")
        env = {**os.environ, "CERTFAILOVER_DNS_ACTION": action, "CERTFAILOVER_DNS_NAME": name,
               "CERTFAILOVER_DNS_VALUE": value}
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=left, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise TransientIssuanceError(f"DNS-01 command {self.argv[0]} {action} {name}: still "
                                         f"running after {left:.1f}s: killed") from None
        except OSError as exc:
            raise IssuanceError(f"DNS-01 command {self.argv[0]}: cannot run: "
                                f"{exc.strerror}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()[:500]
            raise IssuanceError(f"DNS-01 command {self.argv[0]} {action} {name}: exit status "
                                f"{proc.returncode}: {err or 'no output'}")
