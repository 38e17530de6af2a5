"""The CT watch: one pass over every RFC 6962 log of the log list.

Per log: the latest tree head (signature verified with the key from the log list); a
consistency proof from the stored verified head to it (RFC 9162 2.1.4.2), so the log can only
have appended; the new entries, downloaded in batches and added to the stored compact tree,
whose root must equal the signed root, so the log cannot show the watch other entries than
the ones it committed to. Only then does the position move. A head that does not extend the
stored one is a `ct_log_inconsistent` event and the log's new data is not trusted.

Entries naming a site (ct.match) whose TBS certificate is not one certfailover obtained or
imported (any certificate of the store, retired ones included) are `unexpected_certificate`
events: issuer, serial, names, log and index. For a site in `[ct] distrust_on_unexpected`, the
site's CA whose certificates have that issuer (the same issuer name, DER-equal, as one
certfailover obtained from it) is then distrusted for that site (`site_distrust`, a `distrust`
event): the daemon fails the site over to another CA at its next tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import pem as asn1pem
from asn1crypto import x509 as asn1x509

from ..errors import CertFailoverError
from ..events import EventKind
from ..store.db import Database
from . import loglist, positions
from .client import STH, LogClient
from .match import Entry, NameIndex, ct_tbs_digest, parse_entry
from .merkle import CompactTree, leaf_hash, node_hash, verify_consistency
from .settings import CTSettings
from .tiles import WIDTH, TiledClient

log = logging.getLogger(__name__)

__all__ = ["LogResult", "Record", "Unexpected", "Watch"]

#: record(site, kind, message, data): store the event and notify (engine.record in the daemon)
Record = Callable[[str, EventKind, str, dict[str, Any]], object]
ALL_SITES = "*"
#: distrust_on_unexpected leaves a CA alone when the site ordered from it this recently
ORDER_GRACE = timedelta(days=2)


@dataclass(frozen=True)
class Unexpected:
    site: str
    log: str
    index: int
    precert: bool
    issuer: str
    serial: str
    names: tuple[str, ...]
    tbs_sha256: str


@dataclass
class LogResult:
    log: str
    log_id: str
    from_size: int = 0
    to_size: int = 0
    entries: int = 0
    matched: int = 0
    unexpected: list[Unexpected] = field(default_factory=list)
    distrusted: list[tuple[str, str]] = field(default_factory=list)  # (site, CA)
    problem: str = ""
    inconsistent: bool = False
    seconds: float = 0.0


class _Inconsistent(Exception):
    pass


class Watch:
    def __init__(self, settings: CTSettings, db: Database, sites: Mapping[str, Iterable[str]], *,
                 record: Record, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 logs: list[loglist.LogInfo] | None = None,
                 site_cas: Mapping[str, Iterable[str]] | None = None) -> None:
        """`sites`: each site's names; `site_cas`: each site's CAs (for distrust_on_unexpected)."""
        self.settings, self.db, self.record, self.clock = settings, db, record, clock
        self.names = NameIndex({s: tuple(d) for s, d in sites.items()}, settings.subdomains)
        self.site_cas = {s: frozenset(cas) for s, cas in (site_cas or {}).items()}
        self._logs = logs
        self._clients: dict[bytes, LogClient] = {}
        self._tiled: dict[bytes, TiledClient] = {}
        self._known: dict[str, tuple[str, bytes, str]] = {}  # cert id -> (TBS digest, issuer, CA)

    # -- the log list and the store's certificates --------------------------------------
    def logs(self) -> list[loglist.LogInfo]:
        if self._logs is not None:
            return self._logs
        return loglist.load(self.settings.log_list, timeout=self.settings.timeout)

    def known(self) -> set[str]:
        """CT TBS digests of every certificate in the store (retired too)."""
        for cert in self.db.certs(include_retired=True):
            if cert.id in self._known:
                continue
            try:
                data = (Path(cert.path) / "cert.pem").read_bytes()
                der = asn1pem.unarmor(data)[2] if asn1pem.detect(data) else data
                tbs = asn1x509.Certificate.load(der)["tbs_certificate"]
                self._known[cert.id] = (ct_tbs_digest(tbs), tbs["issuer"].dump(), cert.ca)
            except (OSError, ValueError) as exc:
                log.warning("CT watch: cannot read %s of %s: %s", cert.path, cert.id, exc)
        return {digest for digest, _, _ in self._known.values()}

    def issuer_cas(self, issuer_der: bytes) -> set[str]:
        """The CAs whose certificates in the store (known() read them) have this issuer."""
        return {ca for _, issuer, ca in self._known.values() if issuer == issuer_der}

    def _distrust(self, u: Unexpected, issuer_der: bytes) -> list[tuple[str, str]]:
        """distrust_on_unexpected: the site's CA that issued `u`, distrusted for the site;
        not while the site had an order of its own at that CA in the last ORDER_GRACE that is
        still pending or left no stored certificate (its certificate is logged before it is
        stored, or a late one was discarded: distrusting then would fail over off our own
        certificate and order again, over and over). An order whose certificate is stored
        explains nothing: that certificate's TBS is known."""
        if u.site not in self.settings.distrust_on_unexpected:
            return []
        since = self.clock() - ORDER_GRACE
        ours = {o.ca for o in self.db.orders(since=since) if o.site == u.site
                and (o.outcome != "issued" or o.cert_id is None
                     or self.db.cert(o.cert_id) is None)}
        out = []
        for ca in sorted(self.issuer_cas(issuer_der) & self.site_cas.get(u.site, frozenset())):
            if ca in ours:
                log.warning("CT watch: %s entry %d for %s is from %s, where the site had an order "
                            "of its own since %s: alerted, not distrusted", u.log, u.index,
                            u.site, ca, since.isoformat())
                continue
            what = "precertificate" if u.precert else "certificate"
            reason = (f"an unexpected {what} for {u.site} (serial {u.serial}, CT log {u.log} "
                      f"entry {u.index})")
            self.db.distrust(ca, self.clock(), reason, site=u.site)
            self.record(u.site, EventKind.DISTRUST,
                        f"CT watch distrusted {ca} for site {u.site}: {reason}",
                        {"ca": ca, "only_site": True, "log": u.log, "index": u.index,
                         "serial": u.serial})
            out.append((u.site, ca))
        return out

    # -- one pass -----------------------------------------------------------------------
    def poll(self) -> list[LogResult]:
        out = []
        for info in self.logs():
            out.append(self.poll_log(info))
        return out

    def poll_log(self, info: loglist.LogInfo) -> LogResult:
        t0 = time.monotonic()
        res = LogResult(info.url, info.id_b64)
        try:
            if info.tiled:
                tiled = self._tiled.get(info.log_id)
                if tiled is None:
                    tiled = TiledClient(info, timeout=self.settings.timeout)
                    self._tiled[info.log_id] = tiled
                self._poll_tiled(tiled, info, res)
            else:
                client = self._clients.get(info.log_id)
                if client is None:
                    client = LogClient(info, timeout=self.settings.timeout,
                                       batch=self.settings.batch)
                    self._clients[info.log_id] = client
                self._poll(client, info, res)
        except _Inconsistent as exc:
            res.problem, res.inconsistent = f"inconsistent: {exc}", True
            prev = positions.set_problem(self.db, info.id_b64, res.problem, self.clock())
            if prev != res.problem:
                self.record(ALL_SITES, EventKind.CT_LOG_INCONSISTENT,
                            f"CT log {info.url}: {exc}; its new entries are not trusted",
                            {"log": info.url, "log_id": info.id_b64, "reason": str(exc)})
        except CertFailoverError as exc:
            res.problem = str(exc)
            positions.set_problem(self.db, info.id_b64, res.problem, self.clock())
            log.warning("CT watch: %s", exc)
        res.seconds = time.monotonic() - t0
        return res

    def _start_tree(self, client: LogClient, sth: STH) -> CompactTree:
        """The compact tree at the log's current end (start = "end"), from the last leaf's
        audit path, checked against the signed root."""
        if self.settings.start == "beginning" or sth.tree_size == 0:
            return CompactTree()
        (leaf_input, _), = client.entries(sth.tree_size - 1, sth.tree_size - 1)[:1]
        digest = leaf_hash(leaf_input)
        index, path = client.proof_by_hash(digest, sth.tree_size)
        if index != sth.tree_size - 1:
            raise _Inconsistent(f"the last leaf is at index {index}, not {sth.tree_size - 1}")
        try:
            tree = CompactTree(sth.tree_size - 1, list(reversed(path)))
        except ValueError as exc:
            raise _Inconsistent(f"audit path of the last leaf: {exc}") from None
        tree.add(digest)
        if tree.root() != sth.root:
            raise _Inconsistent(f"the audit path of the last leaf does not lead to the signed root "
                                f"of size {sth.tree_size}")
        return tree

    @staticmethod
    def _against(pos: positions.Position, sth: STH) -> None:
        if sth.tree_size < pos.tree_size:
            raise _Inconsistent(f"signed a tree of size {sth.tree_size}, smaller than the "
                                f"{pos.tree_size} it signed before")
        if sth.tree_size == pos.tree_size and sth.root != pos.root:
            raise _Inconsistent(f"signed two different roots for size {sth.tree_size}")

    def _poll(self, client: LogClient, info: loglist.LogInfo, res: LogResult) -> None:
        sth = client.sth()
        pos = positions.load(self.db, info.id_b64)
        if pos is None:
            tree = self._start_tree(client, sth)
        else:
            tree = pos.tree()
            self._against(pos, sth)
            if pos.tree_size < sth.tree_size and pos.tree_size > 0:
                proof = client.consistency(pos.tree_size, sth.tree_size)
                if not verify_consistency(pos.tree_size, sth.tree_size, pos.root, sth.root, proof):
                    raise _Inconsistent(f"the tree of size {sth.tree_size} does not extend the "
                                        f"verified tree of size {pos.tree_size} (consistency "
                                        "proof fails)")

        def leaves() -> Iterator[bytes]:
            while tree.size < sth.tree_size:
                end = min(tree.size + self.settings.batch, sth.tree_size) - 1
                for leaf_input, _extra in client.entries(tree.size, end):
                    yield leaf_input
        self._advance(info, res, sth, tree, leaves())

    def _poll_tiled(self, client: TiledClient, info: loglist.LogInfo, res: LogResult) -> None:
        """A static-ct-api log: the checkpoint, then data tiles from the stored size. Extending
        the stored compact tree to the signed root is the proof the log only appended."""
        sth = client.checkpoint().sth
        pos = positions.load(self.db, info.id_b64)
        if pos is None:
            tree = self._start_tree_tiled(client, sth)
        else:
            tree = pos.tree()
            self._against(pos, sth)
        start = tree.size

        def leaves() -> Iterator[bytes]:
            for n in range(start // WIDTH, -(-sth.tree_size // WIDTH)):
                width = min(WIDTH, sth.tree_size - n * WIDTH)
                for i, leaf in enumerate(client.data_tile(n, width)):
                    if n * WIDTH + i >= start:
                        yield leaf
        self._advance(info, res, sth, tree, leaves())

    def _start_tree_tiled(self, client: TiledClient, sth: STH) -> CompactTree:
        """The compact tree at the checkpoint's size, from hash tiles, checked against the
        signed root (start = "end")."""
        if self.settings.start == "beginning" or sth.tree_size == 0:
            return CompactTree()
        size, nodes, offset = sth.tree_size, [], 0
        for k in reversed(range(size.bit_length())):
            if not size >> k & 1:
                continue
            level, rest = divmod(k, 8)
            first = offset >> (8 * level)  # index among level-`level` hashes
            n = first // WIDTH
            width = min(WIDTH, (size >> (8 * level)) - n * WIDTH)
            hashes = client.hash_tile(level, n, width)[first - n * WIDTH:][:1 << rest]
            while len(hashes) > 1:
                hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
            nodes.append(hashes[0])
            offset += 1 << k
        tree = CompactTree(size, nodes)
        if tree.root() != sth.root:
            raise _Inconsistent(f"its hash tiles do not lead to the signed root of size {size}")
        return tree

    def _advance(self, info: loglist.LogInfo, res: LogResult, sth: STH, tree: CompactTree,
                 leaves: Iterator[bytes]) -> None:
        """Add `leaves` (from tree.size to sth.tree_size) to the tree, matching each; the root
        must be the signed one; then the position moves and the events are recorded."""
        res.from_size = tree.size
        found: list[tuple[Unexpected, bytes]] = []
        known: set[str] | None = None
        for leaf_input in leaves:
            index = tree.size
            tree.add(leaf_hash(leaf_input))
            res.entries += 1
            if not self.names.may_match(leaf_input):
                continue
            try:
                entry = parse_entry(index, leaf_input)
                sites = self.names.sites(entry.names())
            except (CertFailoverError, ValueError, TypeError) as exc:
                log.warning("CT watch: %s entry %d does not parse: %s", info.url, index, exc)
                continue
            if not sites:
                continue
            res.matched += 1
            if known is None:
                known = self.known()
            digest = ct_tbs_digest(entry.tbs)
            if digest not in known:
                found.extend((_unexpected(s, info.url, entry, digest), entry.tbs["issuer"].dump())
                             for s in sorted(sites))
        if tree.root() != sth.root:
            raise _Inconsistent(f"the entries it served do not hash to its signed root of size "
                                f"{sth.tree_size}")
        positions.save(self.db, positions.Position(
            info.id_b64, info.url, sth.tree_size, sth.root, sth.timestamp, tuple(tree.nodes),
            self.clock(), ""))
        res.to_size = sth.tree_size
        res.unexpected = [u for u, _ in found]
        for u, issuer_der in found:
            what = "precertificate" if u.precert else "certificate"
            self.record(u.site, EventKind.UNEXPECTED_CERTIFICATE,
                        f"CT log {u.log} entry {u.index}: a {what} for {', '.join(u.names)} "
                        f"from {u.issuer} (serial {u.serial}) that certfailover did not obtain",
                        {"log": u.log, "index": u.index, "precert": u.precert, "issuer": u.issuer,
                         "serial": u.serial, "names": list(u.names), "tbs_sha256": u.tbs_sha256})
            res.distrusted += self._distrust(u, issuer_der)


def _unexpected(site: str, log_url: str, entry: Entry, digest: str) -> Unexpected:
    return Unexpected(site, log_url, entry.index, entry.precert, entry.issuer(), entry.serial(),
                      tuple(entry.names()), digest)
