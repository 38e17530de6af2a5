"""Which CT entries concern a site, and whether certfailover obtained them.

An entry's certificate (x509_entry) or TBSCertificate (precert_entry) is parsed lazily with
asn1crypto (only the SAN and subject CN are read for every entry). It concerns a site when one
of its DNS names is a site domain, a wildcard covering one, or (when the operator asks for the
site's subdomains) a name under one. Whether certfailover obtained it is decided on the TBS
certificate with the CT extensions removed (the precertificate poison, the embedded SCT list):
a precertificate and the certificate issued from it compare equal (RFC 6962 3.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from asn1crypto import x509 as asn1x509

from . import tls

__all__ = ["Entry", "NameIndex", "ct_tbs_digest", "parse_entry"]

POISON = "1.3.6.1.4.1.11129.2.4.3"
SCT_LIST = "1.3.6.1.4.1.11129.2.4.2"
_CT_EXTENSIONS = {POISON, SCT_LIST}


def ct_tbs_digest(tbs: asn1x509.TbsCertificate) -> str:
    """SHA-256 (hex) of the TBS certificate without the CT poison and SCT list extensions."""
    exts = tbs["extensions"]
    if any(e["extn_id"].dotted in _CT_EXTENSIONS for e in exts):
        new = tbs.copy()
        new["extensions"] = asn1x509.Extensions(
            [e for e in exts if e["extn_id"].dotted not in _CT_EXTENSIONS])
        raw = new.dump(force=True)
    else:
        raw = tbs.dump()
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Entry:
    index: int
    precert: bool
    tbs: asn1x509.TbsCertificate

    def names(self) -> list[str]:
        out: list[str] = []
        for ext in self.tbs["extensions"]:
            if ext["extn_id"].dotted == "2.5.29.17":
                out.extend(str(g.native) for g in ext["extn_value"].parsed
                           if g.name == "dns_name")
        if not out:  # no SAN: the subject CN, as certspotter does
            for rdn in self.tbs["subject"].chosen:
                for atv in rdn:
                    if atv["type"].dotted == "2.5.4.3":
                        out.append(str(atv["value"].native))
        return out

    def issuer(self) -> str:
        return str(self.tbs["issuer"].human_friendly)

    def serial(self) -> str:
        return format(self.tbs["serial_number"].native, "x")


def parse_entry(index: int, leaf_input: bytes) -> Entry:
    leaf = tls.parse_leaf(leaf_input)
    if leaf.entry_type == tls.X509_ENTRY:
        tbs = asn1x509.Certificate.load(leaf.der)["tbs_certificate"]
        return Entry(index, False, tbs)
    return Entry(index, True, asn1x509.TbsCertificate.load(leaf.der))


#: DER of the subjectAltName extension's OID (2.5.29.17)
_SAN_OID_DER = bytes.fromhex("0603551d11")


class NameIndex:
    """The sites' names, for matching a certificate's names fast.

    `may_match(leaf_input)` is a sound prefilter on the raw entry: DNS names are IA5Strings, so
    a certificate naming a site domain, a wildcard covering one or a name under an asked-for
    zone holds the domain's parent (or the zone) as bytes. An entry holding none of them, and
    a subjectAltName extension (without one, the name comes from the subject CN, which may be
    encoded otherwise), names no site and is not parsed at all.
    """

    def __init__(self, sites: Mapping[str, Iterable[str]], subdomains: Iterable[str] = ()) -> None:
        self.exact: dict[str, set[str]] = {}
        self.parents: dict[str, set[str]] = {}  # "example.com" -> sites with "x.example.com"
        self.zones: dict[str, set[str]] = {}  # site domain -> sites that want its subdomains
        wanted = set(subdomains)
        for site, domains in sites.items():
            for d in domains:
                d = d.lower().rstrip(".")
                if d.startswith("*."):  # a wildcard site domain: its parent's children
                    self.zones.setdefault(d[2:], set()).add(site)
                    continue
                self.exact.setdefault(d, set()).add(site)
                if "." in d:
                    self.parents.setdefault(d.split(".", 1)[1], set()).add(site)
                if site in wanted:
                    self.zones.setdefault(d, set()).add(site)
        keys = {d.split(".", 1)[1] if "." in d else d for d in self.exact} | set(self.zones)
        self._keys = tuple(k.encode() for k in sorted(keys))

    def may_match(self, raw: bytes) -> bool:
        low = raw.lower()
        return _SAN_OID_DER not in raw or any(k in low for k in self._keys)

    def sites(self, names: Iterable[str]) -> set[str]:
        hit: set[str] = set()
        for raw in names:
            name = raw.lower().rstrip(".")
            if name in self.exact:
                hit |= self.exact[name]
            if name.startswith("*."):  # a wildcard that covers a site's name
                hit |= self.parents.get(name[2:], set())
                hit |= self.zones.get(name[2:], set())
            if self.zones:
                labels = name.split(".")
                for i in range(1, len(labels)):
                    hit |= self.zones.get(".".join(labels[i:]), set())
        return hit
