"""Per-program trust evaluation of a leaf + chain, with every candidate path.

Path building is done once per certificate and shared by all programs: candidate issuers
come from the served chain and the snapshot's roots (matched by subject DER and, when both
are present, AKI/SKI), every signature is checked with ``cryptography``
(``verify_directly_issued_by``) and verified (child, parent) pairs are cached per engine.
A path ends at any certificate whose subject and public key match a root of some program,
so cross-signed and alternate paths are all found. Each program then judges each path
against its own root entry and constraints: a program trusts the certificate if any path
is trusted.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..names import name_matches
from . import chromever
from .programs import ANY_EKU, SERVER_AUTH, ConstraintSet, RootEntry, RootProgram
from .snapshot import Snapshot, load_snapshot
from .sources.common import load_der, quiet_legacy_roots

MAX_DEPTH = 7

#: Critical extensions a verifier processes (OpenSSL's ``X509_supported_extension`` list,
#: plus the key identifiers, which are never critical in practice). Any other critical
#: extension makes the certificate unusable, as in ``openssl verify`` and browsers; e.g. the
#: CT precertificate poison (1.3.6.1.4.1.11129.2.4.3) on a precertificate.
HANDLED_CRITICAL: frozenset[str] = frozenset({
    "2.5.29.15",  # keyUsage
    "2.5.29.17",  # subjectAltName
    "2.5.29.19",  # basicConstraints
    "2.5.29.32",  # certificatePolicies
    "2.5.29.31",  # cRLDistributionPoints
    "2.5.29.37",  # extKeyUsage
    "2.5.29.36",  # policyConstraints
    "2.5.29.30",  # nameConstraints (not evaluated here: see docs/trust.md "Not modelled")
    "2.5.29.33",  # policyMappings
    "2.5.29.54",  # inhibitAnyPolicy
    "2.5.29.14",  # subjectKeyIdentifier
    "2.5.29.35",  # authorityKeyIdentifier
    "2.16.840.1.113730.1.1",  # netscape-cert-type
    "1.3.6.1.5.5.7.1.7",  # sbgp-ipAddrBlock (RFC 3779)
    "1.3.6.1.5.5.7.1.8",  # sbgp-autonomousSysNum (RFC 3779)
    "1.3.6.1.5.5.7.48.1.5",  # id-pkix-ocsp-nocheck
    "1.3.6.1.5.5.7.1.14",  # proxyCertInfo
})
_ONE_SECOND = timedelta(seconds=1)


class Reason(str, enum.Enum):
    TRUSTED = "trusted"
    NO_PATH = "no_path"  # no signature-valid path to any known root
    ROOT_NOT_INCLUDED = "root_not_included"  # the path's root is not in this program
    ROOT_REMOVED = "root_removed"  # explicitly distrusted or disabled (past its removal date)
    DISTRUST_AFTER = "distrust_after"  # issued (notBefore) after the root's distrust-after date
    SCT_CONSTRAINT = "sct_constraint"  # embedded SCT dates outside the allowed window
    VALIDITY_CONSTRAINT = "validity_constraint"  # notBefore outside a Chrome validity window
    VERSION_CONSTRAINT = "version_constraint"  # not trusted by this client version
    NAME_CONSTRAINT = "name_constraint"  # a DNS name outside the root's permitted names
    EKU = "eku"  # not usable for TLS server authentication
    EXPIRED = "expired"  # a certificate in the path has expired at the evaluation time
    NOT_YET_VALID = "not_yet_valid"
    CRITICAL_EXTENSION = "critical_extension"  # a path certificate has an unknown critical extension
    NAME_MISMATCH = "name_mismatch"  # the leaf does not cover the requested host name
    NO_DATA = "no_data"  # the snapshot has no data for this program


# Which failure to report when no path is trusted: the most specific one.
_PRIORITY = {
    Reason.DISTRUST_AFTER: 0,
    Reason.SCT_CONSTRAINT: 0,
    Reason.VALIDITY_CONSTRAINT: 0,
    Reason.NAME_CONSTRAINT: 0,
    Reason.VERSION_CONSTRAINT: 1,
    Reason.ROOT_REMOVED: 1,
    Reason.EKU: 2,
    Reason.EXPIRED: 3,
    Reason.NOT_YET_VALID: 3,
    Reason.CRITICAL_EXTENSION: 3,
    Reason.NAME_MISMATCH: 4,
    Reason.ROOT_NOT_INCLUDED: 5,
    Reason.NO_DATA: 6,
    Reason.NO_PATH: 7,
}


class ForecastKind(str, enum.Enum):
    CERTIFICATE = "certificate"  # this certificate stops being trusted on the date
    ISSUANCE = "issuance"  # certificates issued after the date from this root are not trusted


@dataclass(frozen=True)
class Forecast:
    program: str
    date: datetime
    kind: ForecastKind
    reason: Reason
    detail: str


@dataclass(frozen=True)
class PathCert:
    subject: str
    sha256: str


@dataclass(frozen=True)
class Verdict:
    program: str
    trusted: bool
    reason: Reason
    detail: str
    path: tuple[PathCert, ...] = ()  # leaf first, anchor last
    root: str | None = None  # sha256 of the program's root entry for this path
    forecasts: tuple[Forecast, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    at: datetime
    leaf_sha256: str
    name: str | None
    paths: int  # how many candidate paths were found
    verdicts: tuple[Verdict, ...]

    def verdict(self, program: str) -> Verdict:
        for v in self.verdicts:
            if v.program == program:
                return v
        raise KeyError(program)


# -- certificate facts, computed once per certificate ------------------------------------


class _Node:
    __slots__ = (
        "_path_cert",
        "_spki",
        "aki",
        "anchors",
        "cert",
        "ekus",
        "is_ca",
        "issuer",
        "not_after",
        "not_before",
        "sha256",
        "ski",
        "subject",
        "unhandled_critical",
    )

    def __init__(self, cert: x509.Certificate, sha256: str | None = None) -> None:
        self.cert = cert
        self.sha256 = sha256 or cert.fingerprint(hashes.SHA256()).hex()
        self.subject = cert.subject.public_bytes()
        self.issuer = cert.issuer.public_bytes()
        self.not_before = cert.not_valid_before_utc
        self.not_after = cert.not_valid_after_utc
        self.ski: bytes | None = None
        self.aki: bytes | None = None
        self.is_ca = False
        self.ekus: frozenset[str] | None = None
        self.unhandled_critical = tuple(
            e.oid.dotted_string for e in cert.extensions
            if e.critical and e.oid.dotted_string not in HANDLED_CRITICAL
        )
        for ext in cert.extensions:
            v = ext.value
            if isinstance(v, x509.BasicConstraints):
                self.is_ca = v.ca
            elif isinstance(v, x509.SubjectKeyIdentifier):
                self.ski = v.digest
            elif isinstance(v, x509.AuthorityKeyIdentifier):
                self.aki = v.key_identifier
            elif isinstance(v, x509.ExtendedKeyUsage):
                self.ekus = frozenset(o.dotted_string for o in v)
        if cert.version is x509.Version.v1 and self.subject == self.issuer:
            self.is_ca = True  # old v1 roots have no extensions
        self.anchors: frozenset[str] = frozenset()  # sha256 of roots with this subject + key
        self._spki: bytes | None = None
        self._path_cert: PathCert | None = None

    @property
    def spki(self) -> bytes:
        if self._spki is None:
            self._spki = self.cert.public_key().public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo
            )
        return self._spki

    def path_cert(self) -> PathCert:
        if self._path_cert is None:
            self._path_cert = PathCert(self.cert.subject.rfc4514_string(), self.sha256)
        return self._path_cert


@dataclass(frozen=True)
class _LeafFacts:
    not_before: datetime
    scts: tuple[datetime, ...]  # embedded SCT timestamps, sorted
    dns_names: tuple[str, ...]


def _leaf_facts(cert: x509.Certificate) -> _LeafFacts:
    scts: list[datetime] = []
    names: list[str] = []
    for ext in cert.extensions:
        v = ext.value
        if isinstance(v, x509.PrecertificateSignedCertificateTimestamps):
            scts.extend(s.timestamp.replace(tzinfo=UTC) for s in v)
        elif isinstance(v, x509.SubjectAlternativeName):
            names.extend(v.get_values_for_type(x509.DNSName))
    return _LeafFacts(cert.not_valid_before_utc, tuple(sorted(scts)), tuple(names))


def _within(name: str, permitted: str) -> bool:
    name, permitted = name.lower().rstrip("."), permitted.lower().lstrip(".").rstrip(".")
    name = name.removeprefix("*.")
    return name == permitted or name.endswith("." + permitted)


def _fmt(d: datetime) -> str:
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- judging one root entry ---------------------------------------------------------------


def _check_set(cs: ConstraintSet, leaf: _LeafFacts, version: int) -> tuple[Reason, str] | None:
    """None if every field of the set holds, else the first failing field."""
    if cs.min_version is not None and (version,) < chromever.parse_version(cs.min_version):
        return Reason.VERSION_CONSTRAINT, f"applies from Chrome {cs.min_version} (now {version})"
    if cs.max_version_exclusive is not None and (version,) >= chromever.parse_version(
        cs.max_version_exclusive
    ):
        return Reason.VERSION_CONSTRAINT, (
            f"applies before Chrome {cs.max_version_exclusive} (now {version})"
        )
    if cs.sct_not_after is not None:
        if not leaf.scts:
            return Reason.SCT_CONSTRAINT, "no embedded SCT (root requires an SCT on or before " + _fmt(cs.sct_not_after) + ")"
        if leaf.scts[0] > cs.sct_not_after:
            return Reason.SCT_CONSTRAINT, (
                f"earliest SCT {_fmt(leaf.scts[0])} is after {_fmt(cs.sct_not_after)}"
            )
    if cs.sct_all_after is not None and (not leaf.scts or leaf.scts[0] <= cs.sct_all_after):
        return Reason.SCT_CONSTRAINT, f"an SCT is not after {_fmt(cs.sct_all_after)}"
    if cs.validity_starts_not_after is not None and leaf.not_before > cs.validity_starts_not_after:
        return Reason.VALIDITY_CONSTRAINT, (
            f"notBefore {_fmt(leaf.not_before)} is after {_fmt(cs.validity_starts_not_after)}"
        )
    if cs.validity_starts_after is not None and leaf.not_before <= cs.validity_starts_after:
        return Reason.VALIDITY_CONSTRAINT, (
            f"notBefore {_fmt(leaf.not_before)} is not after {_fmt(cs.validity_starts_after)}"
        )
    if cs.permitted_dns_names:
        if not leaf.dns_names:
            return Reason.NAME_CONSTRAINT, "no DNS names; root is limited to " + ", ".join(cs.permitted_dns_names)
        for n in leaf.dns_names:
            if not any(_within(n, p) for p in cs.permitted_dns_names):
                return Reason.NAME_CONSTRAINT, (
                    f"{n} is outside {', '.join(cs.permitted_dns_names)}"
                )
    return None


def judge_entry(
    entry: RootEntry, leaf: _LeafFacts, at: datetime, version: int
) -> tuple[Reason, str]:
    """Does ``entry`` let a certificate with ``leaf`` facts chain to it at ``at``?"""
    if entry.distrusted:
        return Reason.ROOT_REMOVED, f"root {entry.name} is explicitly distrusted"
    if entry.removed_at is not None and at >= entry.removed_at:
        return Reason.ROOT_REMOVED, f"root {entry.name} disabled since {_fmt(entry.removed_at)}"
    if entry.ekus is not None and SERVER_AUTH not in entry.ekus and ANY_EKU not in entry.ekus:
        return Reason.EKU, f"root {entry.name} is not enabled for server authentication"
    if entry.distrust_after is not None and leaf.not_before > entry.distrust_after:
        return Reason.DISTRUST_AFTER, (
            f"notBefore {_fmt(leaf.not_before)} is after the distrust-after date "
            f"{_fmt(entry.distrust_after)} of root {entry.name}"
        )
    if entry.constraints:
        failures = [_check_set(cs, leaf, version) for cs in entry.constraints]
        if any(f is None for f in failures):
            return Reason.TRUSTED, ""
        # Report a failure of a set that applies to this version, when there is one.
        real = [f for f in failures if f is not None and f[0] is not Reason.VERSION_CONSTRAINT]
        reason, detail = (real or [f for f in failures if f is not None])[0]
        return reason, f"{detail} (root {entry.name})"
    return Reason.TRUSTED, ""


def _forecasts(
    program: str, entry: RootEntry, leaf: _LeafFacts, at: datetime, version: int
) -> tuple[Forecast, ...]:
    """Future dates at which a trusted (path, entry) stops working."""
    if entry.removed_at is None and entry.distrust_after is None and not entry.constraints:
        return ()
    out: list[Forecast] = []
    # 1. This certificate: a removal date, or a Chrome version not yet stable.
    if entry.removed_at is not None and entry.removed_at > at:
        out.append(Forecast(program, entry.removed_at, ForecastKind.CERTIFICATE,
                            Reason.ROOT_REMOVED, f"root {entry.name} is disabled from {_fmt(entry.removed_at)}"))
    versions = [
        chromever.parse_version(v)[0]
        for cs in entry.constraints
        for v in (cs.min_version, cs.max_version_exclusive)
        if v
    ]
    for v in range(version + 1, max(versions, default=version) + 1):
        reason, detail = judge_entry(entry, leaf, at, v)
        if reason is not Reason.TRUSTED:
            out.append(Forecast(program, max(chromever.release_date(v), at), ForecastKind.CERTIFICATE,
                                reason, f"from Chrome {v}: {detail}"))
            break
    # 2. Issuance: a certificate from this root issued after a scheduled cut-off.
    bounds = sorted(
        {d for d in (entry.distrust_after,) if d is not None}
        | {d for cs in entry.constraints for d in (cs.sct_not_after, cs.validity_starts_not_after) if d}
    )
    for d in bounds:
        if d <= at:
            continue
        t = d + _ONE_SECOND
        future = replace(leaf, not_before=t, scts=(t,))
        reason, detail = judge_entry(entry, future, t, max(version, chromever.stable_version(t)))
        if reason is not Reason.TRUSTED:
            out.append(Forecast(program, d, ForecastKind.ISSUANCE, reason,
                                f"certificates issued after {_fmt(d)} are not trusted: {detail}"))
            break
    return tuple(sorted(out, key=lambda f: f.date))


# -- the engine ----------------------------------------------------------------------------


@dataclass
class _Candidate:
    trusted: bool
    reason: Reason
    detail: str
    path: tuple[_Node, ...]
    root: str | None
    forecasts: tuple[Forecast, ...] = field(default=())

    def rank(self) -> tuple[int, float, int]:
        if self.trusted:
            cert_fc = [f.date for f in self.forecasts if f.kind is ForecastKind.CERTIFICATE]
            iss_fc = [f.date for f in self.forecasts if f.kind is ForecastKind.ISSUANCE]
            # prefer no certificate forecast, then the latest ones
            return (0, -(min(cert_fc).timestamp() if cert_fc else float("inf")),
                    0 if not iss_fc else 1)
        return (1, float(_PRIORITY[self.reason]), 0)


class TrustEngine:
    """Evaluates certificates against every program of one snapshot, sharing path work."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._sig_cache: dict[tuple[str, str], bool] = {}
        self._chain_nodes: dict[x509.Certificate, _Node] = {}  # served intermediates recur
        self._lock = threading.Lock()
        self._by_subject: dict[bytes, list[_Node]] = {}
        self._anchor_keys: dict[tuple[bytes, bytes], set[str]] = {}
        self.skipped: list[str] = []  # roots this cryptography version cannot parse
        with quiet_legacy_roots():
            for sha, der in snapshot.certs.items():
                try:
                    node = _Node(load_der(der), sha)
                except ValueError:
                    self.skipped.append(sha)
                    continue
                self._by_subject.setdefault(node.subject, []).append(node)
                self._anchor_keys.setdefault((node.subject, node.spki), set()).add(sha)
        self._anchor_subjects = {k[0] for k in self._anchor_keys}
        for nodes in self._by_subject.values():
            for n in nodes:
                n.anchors = frozenset(self._anchor_keys[(n.subject, n.spki)])

    # paths ------------------------------------------------------------------------------
    def _node(self, cert: x509.Certificate) -> _Node:
        n = self._chain_nodes.get(cert)
        if n is not None:
            return n
        n = _Node(cert)
        if n.subject in self._anchor_subjects:
            n.anchors = frozenset(self._anchor_keys.get((n.subject, n.spki), ()))
        with self._lock:
            if len(self._chain_nodes) > 10_000:
                self._chain_nodes.clear()
            self._chain_nodes[cert] = n
        return n

    def _signed_by(self, child: _Node, parent: _Node) -> bool:
        key = (child.sha256, parent.sha256)
        ok = self._sig_cache.get(key)
        if ok is None:
            try:
                child.cert.verify_directly_issued_by(parent.cert)
                ok = True
            except (InvalidSignature, ValueError, TypeError):  # TypeError: unsupported key
                ok = False
            with self._lock:
                if len(self._sig_cache) > 200_000:
                    self._sig_cache.clear()
                self._sig_cache[key] = ok
        return ok

    def _paths(self, leaf: _Node, chain: Sequence[_Node]) -> list[tuple[_Node, ...]]:
        local: dict[bytes, list[_Node]] = {}
        for n in chain:
            local.setdefault(n.subject, []).append(n)
        found: list[tuple[_Node, ...]] = []

        def walk(path: tuple[_Node, ...]) -> None:
            cur = path[-1]
            if len(path) > 1 and cur.anchors:
                found.append(path)
            if len(path) > 1 and cur.subject == cur.issuer and cur.anchors:
                return  # a self-issued root ends the path
            if len(path) >= MAX_DEPTH:
                return
            seen = {n.sha256 for n in path}
            for cand in (*local.get(cur.issuer, ()), *self._by_subject.get(cur.issuer, ())):
                if cand.sha256 in seen or not cand.is_ca:
                    continue
                if cur.aki is not None and cand.ski is not None and cur.aki != cand.ski:
                    continue
                if self._signed_by(cur, cand):
                    walk((*path, cand))

        walk((leaf,))
        return found

    # evaluation -------------------------------------------------------------------------
    def evaluate(
        self,
        leaf: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        at: datetime,
        programs: Iterable[str] | None = None,
        name: str | None = None,
        chrome_version: int | None = None,
    ) -> Evaluation:
        """Verdicts for ``leaf`` (served with intermediates ``chain``) at time ``at``."""
        if at.tzinfo is None:
            raise ValueError("evaluate: `at` must be timezone-aware (UTC)")
        names = list(programs) if programs is not None else sorted(self.snapshot.programs)
        leaf_node = _Node(leaf)
        chain_nodes = [self._node(c) for c in chain if c != leaf]
        paths = self._paths(leaf_node, chain_nodes)
        facts = _leaf_facts(leaf)
        version = chrome_version if chrome_version is not None else chromever.stable_version(at)
        path_problems = [self._path_problem(p, at, name, facts) for p in paths]
        verdicts = self._verdicts(names, paths, path_problems, facts, at, version)
        return Evaluation(at, leaf_node.sha256, name, len(paths), verdicts)

    def issuable(
        self,
        leaf: x509.Certificate,
        chain: Sequence[x509.Certificate] = (),
        *,
        at: datetime,
        programs: Iterable[str] | None = None,
    ) -> tuple[Verdict, ...]:
        """Would a certificate that the CA of ``leaf`` issues at ``at`` (over the same chain)
        be trusted? Per program: the verdict for a leaf like ``leaf`` with notBefore and an
        embedded SCT at ``at``. A CA past a distrust-after or SCT cut-off of every root its
        chain reaches is dead for new certificates in that program, even while ``leaf`` (issued
        before the cut-off) is still trusted. The verdicts' forecasts say from when a
        certificate issued now stops being issuable."""
        if at.tzinfo is None:
            raise ValueError("issuable: `at` must be timezone-aware (UTC)")
        names = list(programs) if programs is not None else sorted(self.snapshot.programs)
        paths = self._paths(_Node(leaf), [self._node(c) for c in chain if c != leaf])
        facts = replace(_leaf_facts(leaf), not_before=at, scts=(at,))
        version = chromever.stable_version(at)
        # the hypothetical leaf is valid; the rest of each path is judged as it is
        problems = [self._path_problem(p[1:], at, None, facts) if len(p) > 1 else None
                    for p in paths]
        return self._verdicts(names, paths, problems, facts, at, version)

    def _verdicts(
        self, names: Iterable[str], paths: list[tuple[_Node, ...]],
        problems: list[tuple[Reason, str] | None], facts: _LeafFacts, at: datetime, version: int,
    ) -> tuple[Verdict, ...]:
        out = []
        for prog_name in names:
            prog = self.snapshot.programs.get(prog_name)
            if prog is None:
                out.append(Verdict(prog_name, False, Reason.NO_DATA,
                                   f"no data for program {prog_name!r} in the trust snapshot"))
                continue
            out.append(self._verdict(prog, paths, problems, facts, at, version))
        return tuple(out)

    def _path_problem(
        self, path: tuple[_Node, ...], at: datetime, name: str | None, leaf: _LeafFacts
    ) -> tuple[Reason, str] | None:
        for n in path[:-1]:  # the anchor's own extensions are not enforced (as for validity)
            if n.unhandled_critical:
                return Reason.CRITICAL_EXTENSION, (
                    f"{n.cert.subject.rfc4514_string()} has an unknown critical extension "
                    f"{', '.join(n.unhandled_critical)}"
                    + (" (a CT precertificate, not a certificate)"
                       if "1.3.6.1.4.1.11129.2.4.3" in n.unhandled_critical else "")
                )
        for n in path[:-1]:  # the anchor's own validity is not enforced by the programs
            if at < n.not_before:
                return Reason.NOT_YET_VALID, f"{n.cert.subject.rfc4514_string()} is valid from {_fmt(n.not_before)}"
            if at > n.not_after:
                return Reason.EXPIRED, f"{n.cert.subject.rfc4514_string()} expired {_fmt(n.not_after)}"
        for n in path[:-1]:
            if n.ekus is not None and SERVER_AUTH not in n.ekus and ANY_EKU not in n.ekus:
                return Reason.EKU, f"{n.cert.subject.rfc4514_string()} has no serverAuth EKU"
        if name is not None and not any(name_matches(p, name) for p in leaf.dns_names):
            return Reason.NAME_MISMATCH, f"the certificate does not cover {name}"
        return None

    def _verdict(
        self,
        prog: RootProgram,
        paths: list[tuple[_Node, ...]],
        problems: list[tuple[Reason, str] | None],
        leaf: _LeafFacts,
        at: datetime,
        version: int,
    ) -> Verdict:
        cands: list[_Candidate] = []
        for path, problem in zip(paths, problems):
            entries = [prog.roots[s] for s in sorted(path[-1].anchors) if s in prog.roots]
            if not entries:
                cands.append(_Candidate(False, Reason.ROOT_NOT_INCLUDED,
                                        f"root {path[-1].cert.subject.rfc4514_string()} is not in {prog.name}",
                                        path, None))
                continue
            for entry in entries:
                if problem is not None:
                    cands.append(_Candidate(False, problem[0], problem[1], path, entry.sha256))
                    continue
                reason, detail = judge_entry(entry, leaf, at, version)
                if reason is Reason.TRUSTED:
                    cands.append(_Candidate(True, reason, f"via {entry.name}", path, entry.sha256,
                                            _forecasts(prog.name, entry, leaf, at, version)))
                else:
                    cands.append(_Candidate(False, reason, detail, path, entry.sha256))
        if not cands:
            return Verdict(prog.name, False, Reason.NO_PATH, "no valid path to any known root")
        best = min(cands, key=_Candidate.rank)
        return Verdict(
            prog.name, best.trusted, best.reason, best.detail,
            tuple(n.path_cert() for n in best.path), best.root, best.forecasts,
        )

    def roots_for(
        self, leaf: x509.Certificate, chain: Sequence[x509.Certificate], program: str
    ) -> frozenset[str]:
        """SHA-256 of every root of ``program`` some path of ``leaf`` reaches (time ignored)."""
        prog = self.snapshot.programs.get(program)
        if prog is None:
            return frozenset()
        paths = self._paths(_Node(leaf), [self._node(c) for c in chain if c != leaf])
        return frozenset(s for p in paths for s in p[-1].anchors if s in prog.roots)


_engines: dict[int, TrustEngine] = {}
_engines_lock = threading.Lock()


def engine_for(snapshot: Snapshot | None = None) -> TrustEngine:
    """One engine (and signature cache) per snapshot per process."""
    snap = snapshot or load_snapshot()
    with _engines_lock:
        eng = _engines.get(id(snap))
        if eng is None or eng.snapshot is not snap:
            if len(_engines) >= 4:
                _engines.pop(next(iter(_engines)))
            eng = _engines[id(snap)] = TrustEngine(snap)
    return eng


def shares_root(
    chain_a: Sequence[x509.Certificate],
    chain_b: Sequence[x509.Certificate],
    programs: Iterable[str],
    *,
    snapshot: Snapshot | None = None,
) -> list[str]:
    """Programs in which both chains (leaf first) reach a common root: the second
    certificate is then no independent backup for the first in that program."""
    eng = engine_for(snapshot)
    out = []
    for prog in programs:
        a = eng.roots_for(chain_a[0], chain_a[1:], prog)
        if a and a & eng.roots_for(chain_b[0], chain_b[1:], prog):
            out.append(prog)
    return out
