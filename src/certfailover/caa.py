"""CAA (RFC 8659) with the ACME account and method binding of RFC 8657: may CA X issue for
this site's names, for this account, by this challenge?

- The relevant RRset of a name is the first non-empty CAA RRset found climbing from the name
  towards the root (the root excluded). A CNAME at a name is followed by normal resolution
  (the target's CAA records are that name's); an empty answer climbs from the original name's
  parent, not the target's.
- `issuewild` records, when present, govern wildcard names; otherwise `issue` does. No
  issue/issuewild record in the set: CAA does not restrict. `issue ";"`: nobody.
- A record with the critical flag (128) and a tag the CA does not know forbids issuance.
- `accounturi` must equal the account URL and `validationmethods` must list the challenge
  type; other parameters are ignored. A malformed value authorizes nobody.

DNS through dnspython; the resolver is configurable and every lookup has a total lifetime.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from .errors import CertFailoverError
from .names import nameserver

__all__ = ["CAALookupError", "CAARecord", "Verdict", "evaluate", "lookup", "parse_issue",
           "relevant", "resolver_for"]

KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef", "contactemail", "contactphone",
                        "issuemail", "issuevmc"})
CRITICAL = 128
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")
_PARAM = re.compile(r"^\s*([A-Za-z0-9]+)\s*=\s*([\x21-\x3a\x3c-\x7e]*)\s*$")


class CAALookupError(CertFailoverError):
    """CAA could not be looked up (timeout, SERVFAIL): unknown, never "allowed"."""


@dataclass(frozen=True)
class CAARecord:
    flags: int
    tag: str
    value: str
    owner: str = field(default="", compare=False)  # where DNS found it (a CNAME's target)

    @property
    def critical(self) -> bool:
        return bool(self.flags & CRITICAL)

    def __str__(self) -> str:
        return f'{self.flags} {self.tag} "{self.value}"'


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    name: str  # the name checked
    at: str  # where the relevant RRset was found ("" when there is none)
    reason: str
    records: tuple[CAARecord, ...] = ()


def parse_issue(value: str) -> tuple[str, dict[str, str]] | None:
    """RFC 8659 4.2: `[issuer-domain-name] [";" parameters]` -> (issuer, parameters);
    None when malformed."""
    head, _, rest = value.partition(";")
    issuer = head.strip().lower()
    if issuer and not all(_LABEL.match(label) for label in issuer.split(".")):
        return None
    params: dict[str, str] = {}
    if rest.strip():
        for part in rest.split(";"):
            if not part.strip():
                continue
            m = _PARAM.match(part)
            if m is None:
                return None
            params[m.group(1).lower()] = m.group(2)
    return issuer, params


def relevant(name: str, query: Callable[[str], list[CAARecord]]) -> tuple[str, list[CAARecord]]:
    """The relevant RRset of `name` (RFC 8659 3): (where found, records), or ("", [])."""
    labels = name.rstrip(".").lower().split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
    for i in range(len(labels)):
        node = ".".join(labels[i:])
        records = query(node)
        if records:
            return node, records
    return "", []


def evaluate(name: str, at: str, records: Sequence[CAARecord], *, identities: Iterable[str],
             account_uri: str | None, method: str) -> Verdict:
    """May a CA known by `identities` issue for `name` given its relevant RRset?"""
    ids = {i.lower().rstrip(".") for i in identities}
    recs = tuple(records)
    owner = recs[0].owner if recs else ""
    if owner and owner != at:
        at = f"{at} (CNAME to {owner})"
    for r in recs:
        if r.critical and r.tag.lower() not in KNOWN_TAGS:
            return Verdict(False, name, at, f"CAA at {at} has a critical tag {r.tag!r} that is not "
                           "understood: no CA may issue", recs)
    wildcard = name.startswith("*.")
    wild = [r for r in recs if r.tag.lower() == "issuewild"]
    tag = "issuewild" if wildcard and wild else "issue"
    relevant_recs = wild if tag == "issuewild" else [r for r in recs if r.tag.lower() == "issue"]
    if not relevant_recs:
        return Verdict(True, name, at, f"CAA at {at} does not restrict issuance" if at else
                       "no CAA records: any CA may issue", recs)
    why: list[str] = []
    for r in relevant_recs:
        parsed = parse_issue(r.value)
        if parsed is None:
            why.append(f"{r} is malformed")
            continue
        issuer, params = parsed
        if issuer not in ids:
            continue
        if "accounturi" in params and params["accounturi"] != account_uri:
            why.append(f"{r} requires account {params['accounturi']}, this account is "
                       f"{account_uri or 'not known yet'}")
            continue
        methods = params.get("validationmethods")
        if methods is not None and method not in [m.strip() for m in methods.split(",")]:
            why.append(f"{r} allows validation by {methods}, not {method}")
            continue
        return Verdict(True, name, at, f"CAA at {at} permits {issuer} ({tag})", recs)
    listed = ", ".join(str(r) for r in relevant_recs)
    detail = "; ".join(why) if why else f"{', '.join(sorted(ids)) or 'no identity'} is not in {listed}"
    return Verdict(False, name, at, f"CAA at {at} ({tag}) does not permit this CA for {name}: "
                   f"{detail}", recs)


def resolver_for(nameservers: Sequence[str], timeout: float) -> dns.resolver.Resolver:
    """A resolver asking `nameservers` ("ip" or "ip:port"), or the system's when empty."""
    if not nameservers:
        res = dns.resolver.Resolver()
    else:
        res = dns.resolver.Resolver(configure=False)  # each server on its own port
        res.nameservers = [dns.nameserver.Do53Nameserver(*nameserver(ns)) for ns in nameservers]
    res.lifetime = timeout
    res.timeout = timeout
    return res


def lookup(resolver: dns.resolver.Resolver, name: str, timeout: float) -> list[CAARecord]:
    """CAA records at `name` (CNAMEs followed by the resolver), [] when none or NXDOMAIN."""
    try:
        answer = resolver.resolve(dns.name.from_text(name), dns.rdatatype.CAA,
                                  raise_on_no_answer=False, lifetime=timeout)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as exc:
        raise CAALookupError(f"CAA lookup of {name} failed: {exc}") from None
    if answer.rrset is None:
        return []
    owner = answer.rrset.name.to_text(omit_final_dot=True).lower()
    return [CAARecord(int(r.flags), r.tag.decode("ascii", "replace"),
                      r.value.decode("utf-8", "replace"), owner) for r in answer.rrset]
