"""Every chain a certificate can be served with, judged against every trust anchor its site
requires (the site's PEM bundles and root programs), one verdict per chain.

A CA offers several chains for one leaf (ACME `Link: rel="alternate"`, cross-signs, a path to
an older root); the vault keeps them all (store/vault.py `chains/<i>`). The health checks see
the union of their intermediates, so a certificate fails only when no path is left;
`policy.choose_chain` picks the chain to serve from these verdicts, and the engine switches
chains (same leaf, same key, verified by handshake) when the served one stops satisfying
every required anchor. docs/chains.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.verification import PolicyBuilder, VerificationError

from .config import SiteConfig
from .health import BundleStores, StoreTrustCheck
from .model import Cert, PathVerdict, ServedChain
from .policy import choose_chain
from .sitetrust import TrustAnchor, bundles, programs
from .store.vault import chain_index
from .trust.check import ProgramTrustCheck
from .trust.evaluate import ForecastKind, Reason, TrustEngine

__all__ = ["ChainJudge", "describe", "pick", "served_index"]


class _Engine(Protocol):
    def __call__(self) -> TrustEngine: ...


def _sha(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _fmt(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


class ChainJudge:
    """Judges each stored chain with the very data the health checks use: the chain check's
    PEM bundle cache and the trust check's snapshot (`engine`)."""

    def __init__(self, stores: BundleStores, engine: _Engine | None) -> None:
        self.stores, self.engine = stores, engine

    @classmethod
    def from_checks(cls, checks: Sequence[object]) -> ChainJudge:
        """From the engine's checks (the composition root built them once)."""
        stores = next((k.stores for k in checks if isinstance(k, StoreTrustCheck)),
                      BundleStores())
        trust = next((k for k in checks if isinstance(k, ProgramTrustCheck)), None)
        return cls(stores, trust.trust_engine if trust is not None else None)

    @classmethod
    def for_snapshot(cls, snapshot: Path | None) -> ChainJudge:
        """For status and pins: the `[trust] snapshot` (None: the default one), fresh bundles."""
        return cls(BundleStores(), ProgramTrustCheck(path=snapshot).trust_engine)

    def anchors(self, path: PathVerdict) -> list[x509.Certificate]:
        """The roots `path` reaches: in the site's PEM bundles and in its root programs."""
        out = list(path.roots)
        snap = self.engine().snapshot if self.engine is not None and path.root_sha256 else None
        for sha in path.root_sha256:
            der = snap.certs.get(sha) if snap is not None else None
            if der is not None:
                out.append(x509.load_der_x509_certificate(der))
        return out

    def judge(self, leaf: x509.Certificate, chains: Sequence[Sequence[x509.Certificate]],
              trust: Sequence[TrustAnchor], host: str, at: datetime) -> tuple[PathVerdict, ...]:
        return tuple(self.one(i, leaf, chain, trust, host, at) for i, chain in enumerate(chains))

    def one(self, index: int, leaf: x509.Certificate, chain: Sequence[x509.Certificate],
            trust: Sequence[TrustAnchor], host: str, at: datetime) -> PathVerdict:
        failed: list[str] = []
        used: dict[str, x509.Certificate] = {}  # path certificates after the leaf, by sha256
        until: list[tuple[datetime, str]] = []
        roots: list[x509.Certificate] = []
        for bundle in bundles(trust):
            store, err = self.stores.get(bundle.path)
            if store is None:
                failed.append(f"{bundle}: {err}")
                continue
            verifier = PolicyBuilder().store(store).time(at).build_server_verifier(
                x509.DNSName(host))
            try:
                built = verifier.verify(leaf, list(chain))
            except VerificationError as exc:
                failed.append(f"{bundle}: {exc}")
                continue
            used.update((_sha(c), c) for c in built[1:])
            roots.append(built[-1])
        root_shas: list[str] = []
        names = programs(trust)
        if names and self.engine is not None:
            ev = self.engine().evaluate(leaf, list(chain), at=at, programs=list(names), name=host)
            by_sha = {_sha(c): c for c in chain}
            for v in ev.verdicts:
                if v.reason is Reason.NO_DATA:
                    continue  # unknown is the trust check's warning, not a broken chain
                if not v.trusted:
                    failed.append(f"{v.program}: {v.reason.value}: {v.detail}")
                    continue
                if v.root:
                    root_shas.append(v.root)
                used.update((p.sha256, by_sha[p.sha256]) for p in v.path[1:] if p.sha256 in by_sha)
                until += [(f.date, f"{v.program}: {f.detail}") for f in v.forecasts
                          if f.kind is ForecastKind.CERTIFICATE]
        leaf_end = leaf.not_valid_after_utc
        until += [(c.not_valid_after_utc, f"{c.subject.rfc4514_string()} expires")
                  for c in used.values() if c.not_valid_after_utc < leaf_end]
        first = min(until, key=lambda u: u[0], default=None)
        top = (chain[-1].issuer if chain else leaf.issuer).rfc4514_string()
        return PathVerdict(index, len(chain), top, tuple(failed),
                           first[0] if first else None, first[1] if first else "",
                           tuple(roots), tuple(dict.fromkeys(root_shas)))


def served_index(directory: Path, live: Path | None) -> int | None:
    """The chain of the certificate in `directory` that `live` (the live link's target)
    serves; None when the live link serves another certificate."""
    return chain_index(directory, live)


def describe(v: PathVerdict) -> str:
    """One line for status and events."""
    state = "ok" if v.ok else "fails " + "; ".join(v.failed)
    when = f", until {_fmt(v.until)} ({v.until_why})" if v.until else ""
    return f"chain {v.index} ({v.length} cert(s), to {v.top}): {state}{when}"


def pick(judge: ChainJudge, cert: Cert, chains: Sequence[Sequence[x509.Certificate]],
         leaf: x509.Certificate, site: SiteConfig, at: datetime,
         live: Path | None) -> tuple[ServedChain, int | None, tuple[PathVerdict, ...]]:
    """The chain to serve for `cert` (policy.choose_chain over the judged chains), the chain
    served now (None: `cert` is not served) and the verdicts."""
    served = served_index(Path(cert.path), live)
    paths = judge.judge(leaf, chains, site.trust, site.domains[0], at)
    return choose_chain(paths, served), served, paths
