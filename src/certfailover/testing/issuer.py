"""A fake CA for the engine's issuer port: real X.509 certificates from the kit's PKI, no ACME.

::

    root = pki.make_root("Root A")
    ca_a = FakeIssuer("a", pki.make_intermediate(root, "Issuing A"), clock=clock)
    engine = Engine(config, db, vault, checks=..., issuers={"a": ca_a}, deploy=...)
    ca_a.fail()                  # every order fails (transient) until ca_a.heal()
    ca_a.hang()                  # orders block until ca_a.release() or their deadline
    ca_a.make_unusable("names")  # or "untrusted", "expired": issued but unusable
    assert [o.outcome for o in ca_a.orders] == ["issued", "failed"]

A FakeIssuer is also its own issuer factory (the engine asks for an issuer per site).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography import x509

from ..errors import IssuanceError, TransientIssuanceError
from ..issuers.base import Issued
from ..model import Clock, utcnow
from . import pki

__all__ = ["FakeIssuer", "FakeOrder", "Unusable"]

Unusable = Literal["names", "untrusted", "expired"]


@dataclass(frozen=True)
class FakeOrder:
    """One order the fake CA received, and how it ended."""

    domains: tuple[str, ...]  # the names the CSR asked for
    replaces: str | None  # the ARI id the engine passed (RFC 9773)
    at: datetime  # on the issuer's clock
    outcome: str  # issued, failed, hung, unusable
    serial: int | None = None  # of the issued leaf


class FakeIssuer:
    """Signs every CSR with `authority` (an intermediate: its chain is sent along) for
    `lifetime`, from an hour before `clock()`. `crl_urls`/`ocsp_url` go into each leaf."""

    def __init__(self, name: str, authority: pki.Authority, *, clock: Clock = utcnow,
                 lifetime: timedelta = timedelta(days=90), crl_urls: tuple[str, ...] = (),
                 ocsp_url: str | None = None) -> None:
        self.name, self.authority, self.clock, self.lifetime = name, authority, clock, lifetime
        self.crl_urls, self.ocsp_url = crl_urls, ocsp_url
        self.orders: list[FakeOrder] = []
        self._error: IssuanceError | None = None
        self._unusable: Unusable | None = None
        self._stranger: pki.Authority | None = None
        self._gate: threading.Event | None = None
        self._lock = threading.Lock()

    # -- what the test tells it -----------------------------------------------------------
    def fail(self, message: str = "connection refused", *, transient: bool = True) -> None:
        """Every order fails until `heal()`: TransientIssuanceError, or IssuanceError."""
        kind = TransientIssuanceError if transient else IssuanceError
        self._error = kind(f"CA {self.name}: {message}")

    def hang(self) -> None:
        """Orders block until `release()` or their deadline (then: a transient failure)."""
        self._gate = threading.Event()

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    def make_unusable(self, how: Unusable) -> None:
        """Orders succeed but the certificate is wrong: for other names, from a root nobody
        trusts, or already expired."""
        self._unusable = how

    def heal(self) -> None:
        """Back to issuing good certificates (also releases hung orders)."""
        self._error, self._unusable = None, None
        self.release()

    # -- the port -------------------------------------------------------------------------
    def __call__(self, site: object) -> FakeIssuer:
        """The engine's issuer factory: the same issuer for every site."""
        return self

    def issue(self, csr_pem: bytes, *, deadline: datetime, replaces: str | None = None) -> Issued:
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        domains = tuple(san.get_values_for_type(x509.DNSName))
        gate = self._gate
        if gate is not None:
            wait = max(0.0, (deadline - datetime.now(UTC)).total_seconds())
            if not gate.wait(wait):
                self._note(domains, replaces, "hung")
                raise TransientIssuanceError(f"CA {self.name}: no answer before the deadline")
        if self._error is not None:
            self._note(domains, replaces, "failed")
            raise self._error
        leaf = self._sign(csr, domains)
        self._note(domains, replaces, "unusable" if self._unusable else "issued",
                   leaf.serial_number)
        signer = self._signer()
        return Issued(pki.pem(leaf), pki.pem(*signer.chain()), self.name)

    def _signer(self) -> pki.Authority:
        if self._unusable != "untrusted":
            return self.authority
        if self._stranger is None:
            self._stranger = pki.make_root(f"Root nobody trusts ({self.name})")
        return self._stranger

    def _sign(self, csr: x509.CertificateSigningRequest,
              domains: tuple[str, ...]) -> x509.Certificate:
        start = self.clock() - timedelta(hours=1)
        end = start + self.lifetime
        if self._unusable == "expired":
            start, end = start - 2 * self.lifetime, start - self.lifetime
        names = ("unrelated.invalid",) if self._unusable == "names" else domains
        leaf, _ = pki.make_leaf(self._signer(), list(names), csr=csr, not_before=start,
                                not_after=end, crl_urls=self.crl_urls, ocsp_url=self.ocsp_url)
        return leaf

    def _note(self, domains: tuple[str, ...], replaces: str | None, outcome: str,
              serial: int | None = None) -> None:
        with self._lock:
            self.orders.append(FakeOrder(domains, replaces, self.clock(), outcome, serial))
