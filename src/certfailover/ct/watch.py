"""The CT watch: one pass over every log of the log list (RFC 6962 and static-ct-api).

Per log: the latest tree head (signature verified with the key from the log list, not older
than the log's maximum merge delay); a consistency proof from the stored verified head to it
(RFC 9162 2.1.4.2), so the log can only have appended; the new entries, downloaded in batches
and added to the stored compact tree, whose root must equal the signed root, so the log cannot
show the watch other entries than the ones it committed to. Only then does the position move.
A head that does not extend the stored one is a `ct_log_inconsistent` event and the log's new
data is not trusted.

A pass takes at most `[ct] pass_budget` seconds in all (every request of the pass, the log
list's included, ends by then: net.deadline). Logs are polled least recently reached first,
so the logs a pass did not reach come first in the next one. A log whose entries stop coming
before its signed size (the budget's end draws near, or a request fails) keeps what was read:
the prefix is proven to be the start of the signed tree (a consistency proof, or the log's hash
tiles) and becomes the position, its events are recorded, and the next pass goes on from it.
The last tenth of the budget (at most one `timeout`) is kept for that proof: no entry request
starts or runs past it.

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
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from asn1crypto import pem as asn1pem
from asn1crypto import x509 as asn1x509

from .. import net
from ..errors import CertFailoverError
from ..events import EventKind
from ..store.db import Database
from . import loglist, positions
from .client import STH, LogClient, LogError
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
#: the share of the pass budget (at most one [ct] timeout) kept at its end to prove the entries
#: of a log read so far: no entry request starts or runs into it
PROOF_SHARE = 0.1
#: a request that failed this close to the pass's deadline failed because of the budget
_EPS = 0.05
_T = TypeVar("_T")


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
    #: the pass budget ran out before this log was reached or before its signed size: the
    #: next pass polls it first (not reached) or goes on from `to_size`
    budget: bool = False


class _Inconsistent(Exception):
    pass


class _OutOfTime(Exception):
    """The pass's time for entry requests is over."""


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
        self._passes = 0
        self._reached: dict[bytes, int] = {}  # log ID -> the last pass that started polling it

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
    def _reserve(self) -> float:
        return min(self.settings.timeout, self.settings.pass_budget * PROOF_SHARE)

    def poll(self) -> list[LogResult]:
        """One pass over every log, in at most `[ct] pass_budget` seconds; the results in
        the log list's order."""
        until = time.monotonic() + self.settings.pass_budget
        with net.deadline(at=until):
            infos = self.logs()
        self._passes += 1
        last = positions.polled(self.db)

        def turn(info: loglist.LogInfo) -> tuple[int, int, float]:
            """Least recently reached first: by this watch, then (after a restart) by the
            store; a log never polled before all others."""
            seen = last.get(info.id_b64)
            return (self._reached.get(info.log_id, 0), seen is not None,
                    seen[1].timestamp() if seen is not None else 0.0)
        stop = until - self._reserve()
        out: dict[bytes, LogResult] = {}
        for info in sorted(infos, key=turn):
            if time.monotonic() >= stop:
                size = last.get(info.id_b64, (0, None))[0]
                out[info.log_id] = LogResult(
                    info.url, info.id_b64, from_size=size, to_size=size, budget=True,
                    problem=f"not reached: the pass budget ({self.settings.pass_budget:g} s) "
                            "ran out; first in the next pass")
                continue
            self._reached[info.log_id] = self._passes
            out[info.log_id] = self.poll_log(info, until=until)
        return [out[i.log_id] for i in infos if i.log_id in out]

    def poll_log(self, info: loglist.LogInfo, *, until: float | None = None) -> LogResult:
        """Poll one log; `until`: the pass's deadline (time.monotonic()), if any."""
        t0 = time.monotonic()
        res = LogResult(info.url, info.id_b64)
        stop = None if until is None else until - self._reserve()
        try:
            with net.deadline(at=until):
                if info.tiled:
                    tiled = self._tiled.get(info.log_id)
                    if tiled is None:
                        tiled = TiledClient(info, timeout=self.settings.timeout, now=self._now)
                        self._tiled[info.log_id] = tiled
                    self._poll_tiled(tiled, info, res, stop)
                else:
                    client = self._clients.get(info.log_id)
                    if client is None:
                        client = LogClient(info, timeout=self.settings.timeout,
                                           batch=self.settings.batch, now=self._now)
                        self._clients[info.log_id] = client
                    self._poll(client, info, res, stop)
        except _Inconsistent as exc:
            res.problem, res.inconsistent = f"inconsistent: {exc}", True
            prev = positions.set_problem(self.db, info.id_b64, res.problem, self.clock())
            if prev != res.problem:
                self.record(ALL_SITES, EventKind.CT_LOG_INCONSISTENT,
                            f"CT log {info.url}: {exc}; its new entries are not trusted",
                            {"log": info.url, "log_id": info.id_b64, "reason": str(exc)})
        except _OutOfTime as exc:
            res.budget = True
            res.problem = (f"{info.url}: the pass budget ({self.settings.pass_budget:g} s) ran "
                           f"out {exc}; the next pass goes on")
            positions.set_problem(self.db, info.id_b64, res.problem, self.clock())
            log.warning("CT watch: %s", res.problem)
        except CertFailoverError as exc:
            res.problem = str(exc)
            if until is not None and time.monotonic() >= until - _EPS:
                res.budget = True
                res.problem = (f"the pass budget ({self.settings.pass_budget:g} s) ran out: "
                               f"{exc}")
            positions.set_problem(self.db, info.id_b64, res.problem, self.clock())
            log.warning("CT watch: %s", res.problem)
        res.seconds = time.monotonic() - t0
        return res

    def _now(self) -> float:
        """The watch's clock in seconds since the epoch (a tree head's age is judged by it)."""
        return self.clock().timestamp()

    @staticmethod
    def _in_time(stop: float | None, get: Callable[[], _T]) -> _T:
        """`get()`, one request for entries, ended at `stop` (the end of the pass's time for
        entries): _OutOfTime when `stop` has come, before or during the request."""
        if stop is None:
            return get()
        if time.monotonic() >= stop:
            raise _OutOfTime
        try:
            with net.deadline(at=stop):
                return get()
        except LogError:
            if time.monotonic() >= stop - _EPS:
                raise _OutOfTime from None
            raise

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

    def _poll(self, client: LogClient, info: loglist.LogInfo, res: LogResult,
              stop: float | None) -> None:
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

        start = tree.size

        def leaves() -> Iterator[bytes]:
            while tree.size < sth.tree_size:
                end = min(tree.size + self.settings.batch, sth.tree_size) - 1
                for leaf_input, _extra in self._in_time(stop, partial(client.entries,
                                                                      tree.size, end)):
                    yield leaf_input

        def prove(prefix: CompactTree) -> None:
            proof = client.consistency(prefix.size, sth.tree_size)
            if not verify_consistency(prefix.size, sth.tree_size, prefix.root(), sth.root,
                                      proof):
                raise _Inconsistent(f"the entries {start} to {prefix.size - 1} it served are not "
                                    f"the start of its signed tree of size {sth.tree_size} "
                                    f"(consistency proof from {prefix.size} fails)")
        self._advance(info, res, sth, tree, leaves(), prove)

    def _poll_tiled(self, client: TiledClient, info: loglist.LogInfo, res: LogResult,
                    stop: float | None) -> None:
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
                for i, leaf in enumerate(self._in_time(stop, partial(client.data_tile, n,
                                                                     width))):
                    if n * WIDTH + i >= start:
                        yield leaf

        def prove(prefix: CompactTree) -> None:
            whole = prefix.copy()
            self._from_hash_tiles(client, whole, sth.tree_size)
            if whole.root() != sth.root:
                raise _Inconsistent(f"the entries {start} to {prefix.size - 1} it served and its "
                                    f"hash tiles do not lead to its signed root of size "
                                    f"{sth.tree_size}")
        self._advance(info, res, sth, tree, leaves(), prove)

    def _start_tree_tiled(self, client: TiledClient, sth: STH) -> CompactTree:
        """The compact tree at the checkpoint's size, from hash tiles, checked against the
        signed root (start = "end")."""
        if self.settings.start == "beginning" or sth.tree_size == 0:
            return CompactTree()
        tree = CompactTree()
        self._from_hash_tiles(client, tree, sth.tree_size)
        if tree.root() != sth.root:
            raise _Inconsistent(f"its hash tiles do not lead to the signed root of size "
                                f"{sth.tree_size}")
        return tree

    @staticmethod
    def _from_hash_tiles(client: TiledClient, tree: CompactTree, size: int) -> None:
        """Extend `tree` to `size` leaves with the roots of the largest aligned perfect
        subtrees that fill the gap, read from the hash tiles of the tree of `size` (a subtree
        of 2^(8L + r) leaves: 2^r hashes of a level-L tile; one tile never splits one)."""
        tiles: dict[tuple[int, int], list[bytes]] = {}
        while tree.size < size:
            k = (size - tree.size).bit_length() - 1
            if tree.size:
                k = min(k, (tree.size & -tree.size).bit_length() - 1)
            level, rest = divmod(k, 8)
            first = tree.size >> (8 * level)  # index among level-`level` hashes
            n = first // WIDTH
            if (level, n) not in tiles:
                width = min(WIDTH, (size >> (8 * level)) - n * WIDTH)
                tiles[(level, n)] = client.hash_tile(level, n, width)
            hashes = tiles[(level, n)][first - n * WIDTH:][:1 << rest]
            while len(hashes) > 1:
                hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
            tree.add_subtree(hashes[0], k)

    @staticmethod
    def _proven(info: loglist.LogInfo, start: int, tree: CompactTree,
                prove: Callable[[CompactTree], None]) -> bool:
        """Whether the entries read from `start` (to tree.size) are there and proven to be the
        start of the signed tree (_Inconsistent when the log's proof says they are not)."""
        if tree.size == start:
            return False
        try:
            prove(tree)
        except LogError as exc:
            log.warning("CT watch: %s: entries %d to %d read but not proven, not kept: %s",
                        info.url, start, tree.size - 1, exc)
            return False
        return True

    def _advance(self, info: loglist.LogInfo, res: LogResult, sth: STH, tree: CompactTree,
                 leaves: Iterator[bytes], prove: Callable[[CompactTree], None]) -> None:
        """Add `leaves` (from tree.size to sth.tree_size) to the tree, matching each; the root
        must be the signed one; then the position moves and the events are recorded. When
        the leaves stop coming early (_OutOfTime, or a LogError), `prove(tree)` shows that the
        ones read are the start of the signed tree; then the position moves to them, their
        events are recorded, and the stop is raised for poll_log to report."""
        res.from_size = tree.size
        found: list[tuple[Unexpected, bytes]] = []
        known: set[str] | None = None
        stopped: _OutOfTime | LogError | None = None
        try:
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
                    found.extend((_unexpected(s, info.url, entry, digest),
                                  entry.tbs["issuer"].dump()) for s in sorted(sites))
        except (_OutOfTime, LogError) as exc:
            stopped = exc
        if stopped is None:
            if tree.root() != sth.root:
                raise _Inconsistent(f"the entries it served do not hash to its signed root of "
                                    f"size {sth.tree_size}")
        elif not self._proven(info, res.from_size, tree, prove):
            if isinstance(stopped, LogError):
                raise stopped
            raise _OutOfTime(f"at entry {res.from_size} of {sth.tree_size}")
        positions.save(self.db, positions.Position(
            info.id_b64, info.url, tree.size, tree.root(), sth.timestamp, tuple(tree.nodes),
            self.clock(), ""))
        res.to_size = tree.size
        res.unexpected = [u for u, _ in found]
        for u, issuer_der in found:
            what = "precertificate" if u.precert else "certificate"
            self.record(u.site, EventKind.UNEXPECTED_CERTIFICATE,
                        f"CT log {u.log} entry {u.index}: a {what} for {', '.join(u.names)} "
                        f"from {u.issuer} (serial {u.serial}) that certfailover did not obtain",
                        {"log": u.log, "index": u.index, "precert": u.precert, "issuer": u.issuer,
                         "serial": u.serial, "names": list(u.names), "tbs_sha256": u.tbs_sha256})
            res.distrusted += self._distrust(u, issuer_der)
        if isinstance(stopped, _OutOfTime):
            raise _OutOfTime(f"at entry {tree.size} of {sth.tree_size} (entries up to there "
                             "verified and kept)")
        if stopped is not None:
            raise stopped


def _unexpected(site: str, log_url: str, entry: Entry, digest: str) -> Unexpected:
    return Unexpected(site, log_url, entry.index, entry.precert, entry.issuer(), entry.serial(),
                      tuple(entry.names()), digest)
