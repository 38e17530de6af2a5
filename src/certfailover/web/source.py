"""What the status page shows, read from the store: the `status --json` document (kept as a
snapshot refreshed in the background, so a page never waits on the database), and a site's
details (chains, pins, events) read when its page is asked for."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..chains import ChainJudge
from ..config import Config, SiteConfig
from ..errors import CertFailoverError
from ..model import CertState, to_jsonable
from ..pins import spare_key_path, spki_pin
from ..status import site_status
from ..store.db import Database
from ..store.vault import Vault

__all__ = ["ChainCert", "SiteDetails", "Snapshots", "site_details", "status_document"]

log = logging.getLogger(__name__)


def status_document(db: Database, vault: Vault | None, config: Config,
                    now: Any) -> dict[str, Any]:
    """Exactly what `certfailover status --json` prints (as JSON-ready data)."""
    judge = ChainJudge.for_snapshot(config.trust.snapshot) if vault is not None else None
    statuses = [site_status(db, s, now, vault=vault, daemon=config.daemon, judge=judge)
                for s in config.sites]
    if vault is not None:
        for st, site in zip(statuses, config.sites, strict=True):
            try:
                vault.live_target(site.name)
            except CertFailoverError as exc:
                st["notes"].append(str(exc))
    out: dict[str, Any] = to_jsonable({"time": now, "sites": statuses})
    return out


class Snapshots:
    """The latest status document, rebuilt every `refresh` seconds by one background thread
    (`start`), or on demand (`refresh_now`). Readers get the last complete one at once."""

    def __init__(self, build: Callable[[], dict[str, Any]], refresh: float) -> None:
        self._build, self.refresh = build, refresh
        self._latest: dict[str, Any] | None = None
        self._encoded: bytes = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh_now(self) -> dict[str, Any]:
        doc = self._build()
        encoded = json.dumps(doc).encode() + b"\n"  # once per snapshot, not per poll
        with self._lock:
            self._latest, self._encoded = doc, encoded
        return doc

    def latest(self) -> dict[str, Any]:
        with self._lock:
            doc = self._latest
        return doc if doc is not None else self.refresh_now()

    def latest_json(self) -> bytes:
        """The latest document as JSON (compact: the C encoder; same content as --json)."""
        self.latest()
        with self._lock:
            return self._encoded

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="certfailover-web-status",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh_now()
            except Exception:  # a store hiccup keeps the last snapshot; the page says its time
                log.exception("status page: cannot read the store")
            took = time.monotonic() - started
            # at most half of one core: a big fleet's snapshot waits as long as it took
            self._stop.wait(max(0.05, self.refresh - took, took))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class ChainCert:
    subject: str
    issuer: str
    not_after: str
    sha256: str


@dataclass(frozen=True)
class SiteDetails:
    chains: dict[str, list[list[ChainCert]]]  # cert id -> each stored chain, leaf first
    pins: dict[str, str]  # cert id (or "spare") -> pin-sha256
    events: list[dict[str, Any]]  # newest first
    errors: list[str]
    retired: list[dict[str, Any]]  # the last retired certificates, for the timeline


def _describe(c: x509.Certificate) -> ChainCert:
    from cryptography.hazmat.primitives import hashes
    return ChainCert(c.subject.rfc4514_string(), c.issuer.rfc4514_string(),
                     c.not_valid_after_utc.isoformat(), c.fingerprint(hashes.SHA256()).hex())


def site_details(db: Database, vault: Vault, site: SiteConfig, *, events: int = 200,
                 retired_max: int = 4) -> SiteDetails:
    """Chains and key pins of the site's certificates and its last `events` events. Reads only:
    the spare key's pin is shown when the spare key exists (`certfailover pins` creates it)."""
    chains: dict[str, list[list[ChainCert]]] = {}
    pins: dict[str, str] = {}
    errors: list[str] = []
    for c in db.certs(site.name):
        try:
            m = vault.load(Path(c.path))
        except CertFailoverError as exc:
            errors.append(f"{c.id}: {exc}")
            continue
        chains[c.id] = [[_describe(x) for x in (m.leaf, *chain)] for chain in m.chains or (m.chain,)]
        pins[c.id] = spki_pin(m.leaf.public_key())
    spare = spare_key_path(vault.root, site.name)
    if spare.is_file():
        try:
            key = serialization.load_pem_private_key(spare.read_bytes(), password=None)
            pins["spare"] = spki_pin(key.public_key())
        except (OSError, ValueError, TypeError) as exc:
            errors.append(f"spare key {spare}: cannot read it ({type(exc).__name__})")
    evs = [to_jsonable(e) for e in reversed(db.events(site=site.name, limit=events))]
    gone = [c for c in db.certs(site.name, include_retired=True) if c.state is CertState.RETIRED]
    retired: list[dict[str, Any]] = [
        {"id": c.id, "ca": c.ca, "serial": c.serial, "state": c.state.value, "health": "retired",
         "not_before": c.not_before.isoformat(), "not_after": c.not_after.isoformat(),
         "findings": []} for c in gone[-retired_max:]]
    return SiteDetails(chains, pins, evs, errors, retired)
