"""ACME issuance (RFC 8555) over the `acme` library, with EAB, ARI `replaces` and fine polling.

One `AcmeIssuer` is one CA configuration: a directory URL, an account key file and a
solver: HTTP-01 (challenges.py) or DNS-01 (dns01.py). `issue()` runs one order to completion before a deadline:

    account (created once, looked up with onlyReturnExisting when the key exists)
      -> newOrder (+ `replaces` when the CA advertises renewalInfo)
      -> answer every pending http-01 or dns-01 challenge, poll the authorizations
      -> finalize with the caller's CSR, poll the order, download the chain
      -> pick the preferred chain among alternates

Every HTTP request runs on a `net.session()` inside `net.deadline(...)` set to the issue
deadline, so a CA that drips its handshake, headers or body one byte at a time cannot keep an
issuance past its deadline (requests' own timeouts are per socket read).

Polling is done in small steps (20 ms growing to 0.5 s) instead of the library's 1-second
`poll_and_finalize`, so an issuance against a local Pebble takes ~0.1 s instead of ~2 s.

Errors: transient ones (badNonce, 5xx, serverInternal, rateLimited, refused or reset
connections, timeouts) restart the issuance with exponential backoff until the deadline,
then raise TransientIssuanceError; anything else raises IssuanceError at once. Both name the
CA, the URL and the ACME problem type and detail. Private keys and the EAB HMAC key are never
logged or put into messages.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from acme import challenges as acme_challenges
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from josepy.errors import DeserializationError
from josepy.json_util import field as jose_field
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA
from requests.utils import parse_header_links

from .. import net
from ..errors import InputError, IssuanceError, TransientIssuanceError
from ..model import Clock, utcnow
from ..store.files import fsync_dir
from .base import Issued
from .challenges import Http01Solver
from .dns01 import DeadlineReached, Dns01Solver

__all__ = ["TRANSIENT_PROBLEMS", "AcmeIssuer", "NewOrderWithReplaces"]

logger = logging.getLogger(__name__)

_PROBLEM_PREFIX = "urn:ietf:params:acme:error:"
# ACME problem codes worth retrying: the same request may succeed a moment later.
TRANSIENT_PROBLEMS = frozenset({"badNonce", "serverInternal", "rateLimited"})
_NONCE_ATTEMPTS = 6  # Pebble rejects 5% of good nonces; the library itself retries only once
_USER_AGENT = "certfailover"
_CHALLENGE_TYPES: dict[str, type[acme_challenges.Challenge]] = {
    "http-01": acme_challenges.HTTP01,
    "dns-01": acme_challenges.DNS01,
}


class _DeadlineReached(DeadlineReached):
    """The deadline passed between steps (the cause worth reporting is the error before it)."""


class _RateLimited(TransientIssuanceError):
    """Worth retrying later, but not in this issuance: hammering a rate limit extends it."""


class NewOrderWithReplaces(messages.NewOrder):
    """newOrder with the `replaces` field of ACME Renewal Information (RFC 9773 section 5).

    acme 5.9 has no `replaces`; this extends its message class the supported way (a josepy
    field on a subclass), so the payload is still built and signed by the library.
    """

    replaces: str | None = jose_field("replaces", omitempty=True)


def _code(e: messages.Error) -> str | None:
    """The ACME problem code; acme's `Error.code` is None for codes it does not know."""
    typ = str(e.typ or "")
    return typ[len(_PROBLEM_PREFIX) :] if typ.startswith(_PROBLEM_PREFIX) else None


def _problem(e: messages.Error) -> str:
    text = f"{e.typ}: {e.detail}" if e.detail else str(e.typ)
    for sub in e.subproblems or ():
        ident = f" ({sub.identifier.value})" if sub.identifier is not None else ""
        text += f"; {sub.typ}{ident}: {sub.detail}"
    return text


_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def _is_base64url(value: str) -> bool:
    """Strict check: josepy's decoder silently skips characters outside the alphabet."""
    if not _B64URL_RE.match(value):
        return False
    try:
        return bool(
            base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
        )
    except (binascii.Error, ValueError):
        return False


def _identifiers(csr: x509.CertificateSigningRequest) -> list[messages.Identifier]:
    names: list[messages.Identifier] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for dns in san.get_values_for_type(x509.DNSName):
            names.append(messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=dns))
        for ip in san.get_values_for_type(x509.IPAddress):
            names.append(messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(ip)))
    if not names:
        for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            names.append(messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=str(attr.value)))
    return names


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _top_issuer_cn(chain: list[x509.Certificate]) -> str | None:
    if not chain:
        return None
    cns = chain[-1].issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


class AcmeIssuer:
    """Issue certificates from one ACME CA. Not for concurrent use (issue() is serialized)."""

    def __init__(
        self,
        name: str,
        directory_url: str,
        *,
        email: str | None,
        account_key_path: Path,
        solver: Http01Solver | Dns01Solver,
        eab_kid: str | None = None,
        eab_hmac_key: str | None = None,
        ca_bundle: Path | None = None,
        preferred_chain: str | None = None,
        timeout: float = 30,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        poll_initial: float = 0.02,
        poll_cap: float = 0.5,
    ) -> None:
        if (eab_kid is None) != (eab_hmac_key is None):
            raise IssuanceError(f"{name}: eab_kid and eab_hmac_key must be given together")
        if eab_hmac_key is not None and not _is_base64url(eab_hmac_key):
            raise IssuanceError(f"{name}: eab_hmac_key is not valid base64url (kid {eab_kid!r})")
        self.name = name
        self.directory_url = directory_url
        self.email = email
        self.account_key_path = Path(account_key_path)
        self.solver: Any = solver
        self.challenge_type: str = getattr(solver, "challenge_type", "http-01")
        if self.challenge_type not in _CHALLENGE_TYPES:
            raise IssuanceError(f"{name}: unknown challenge type {self.challenge_type!r}")
        self.eab_kid = eab_kid
        self._eab_hmac_key = eab_hmac_key  # never logged, never in a message
        self.ca_bundle = Path(ca_bundle) if ca_bundle is not None else None
        self.preferred_chain = preferred_chain
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep
        self.poll_initial = poll_initial
        self.poll_cap = poll_cap
        self._lock = threading.Lock()
        self._net: acme_client.ClientNetwork | None = None
        self._jwk: JWK | None = None
        self._directory: messages.Directory | None = None
        self._regr: messages.RegistrationResource | None = None
        self._key_existed = False

    def __repr__(self) -> str:  # no secrets in reprs
        return f"AcmeIssuer(name={self.name!r}, directory_url={self.directory_url!r})"

    @property
    def account_url(self) -> str | None:
        """The account URL once the account is known (after the first issue())."""
        return self._regr.uri if self._regr is not None else None

    # ------------------------------------------------------------------ public

    def issue(self, csr_pem: bytes, *, deadline: datetime, replaces: str | None = None) -> Issued:
        if deadline.tzinfo is None:
            raise ValueError("deadline must be timezone-aware (UTC)")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise InputError(f"{self.name}: the CSR to issue is not a PEM CSR: {e}") from e
        if not csr.is_signature_valid:
            raise InputError(f"{self.name}: the CSR's signature does not verify")
        if not _identifiers(csr):
            raise InputError(f"{self.name}: the CSR names no DNS name or IP address")
        with self._lock:
            # the issue deadline as a monotonic time: no HTTP phase of any step outlasts it
            at = time.monotonic() + self._remaining(deadline)
            with net.deadline(at=at):
                return self._issue_with_retries(csr, csr_pem, deadline, replaces)

    # --------------------------------------------------------------- internals

    def _remaining(self, deadline: datetime) -> float:
        return (deadline - self._clock()).total_seconds()

    def _issue_with_retries(
        self,
        csr: x509.CertificateSigningRequest,
        csr_pem: bytes,
        deadline: datetime,
        replaces: str | None,
    ) -> Issued:
        backoff = 0.1
        attempt = 0
        cause: TransientIssuanceError | None = None
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                issued = self._issue_once(csr, csr_pem, deadline, replaces)
            except _RateLimited:
                raise
            except TransientIssuanceError as e:
                if cause is None or not isinstance(e, DeadlineReached):
                    cause = e
                remaining = self._remaining(deadline)
                logger.info(
                    "%s: transient failure (attempt %d, %.1fs left): %s",
                    self.name, attempt, remaining, e,
                )  # fmt: skip
                if remaining <= 0:
                    raise TransientIssuanceError(
                        f"{cause} (gave up at the deadline after {attempt} attempt(s))"
                    ) from cause
                self._sleep(min(backoff, remaining))
                backoff = min(backoff * 2, 10.0)
                continue
            logger.info(
                "%s: issued in %.3fs (attempt %d)", self.name, time.monotonic() - started, attempt
            )
            return issued

    @contextmanager
    def _step(self, url: str, deadline: datetime) -> Iterator[None]:
        """Run one protocol step: bound its HTTP timeout, turn failures into our errors."""
        remaining = self._remaining(deadline)
        if remaining <= 0:
            raise _DeadlineReached(f"{self.name}: {url}: deadline reached")
        if self._net is not None:
            # per-request timeout: never wait past the deadline
            self._net._default_timeout = max(0.05, min(self.timeout, remaining))  # type: ignore[assignment]
        try:
            yield
        except IssuanceError:
            raise
        except messages.Error as e:
            if _code(e) == "accountDoesNotExist":
                self._regr = None  # e.g. the CA lost its state: look up / register again
                raise TransientIssuanceError(f"{self.name}: {url}: {_problem(e)}") from e
            if _code(e) == "rateLimited":
                raise _RateLimited(f"{self.name}: {url}: {_problem(e)}") from e
            if _code(e) in TRANSIENT_PROBLEMS:
                raise TransientIssuanceError(f"{self.name}: {url}: {_problem(e)}") from e
            hint = ""
            if _code(e) == "externalAccountRequired" and self.eab_kid is None:
                hint = " (configure eab_kid and eab_hmac_key for this CA)"
            raise IssuanceError(f"{self.name}: {url}: {_problem(e)}{hint}") from e
        except requests.exceptions.SSLError as e:
            if "CERTIFICATE_VERIFY_FAILED" in str(e):
                raise IssuanceError(
                    f"{self.name}: {url}: TLS certificate of the CA does not verify"
                    f" (ca_bundle={self.ca_bundle}): {e}"
                ) from e
            raise TransientIssuanceError(f"{self.name}: {url}: TLS error: {e}") from e
        except acme_errors.ConflictError as e:
            raise IssuanceError(f"{self.name}: {url}: HTTP 409 Conflict ({e})") from e
        except (requests.ConnectionError, requests.Timeout) as e:
            raise TransientIssuanceError(f"{self.name}: {url}: {type(e).__name__}: {e}") from e
        except (acme_errors.BadNonce, acme_errors.MissingNonce, acme_errors.TimeoutError) as e:
            raise TransientIssuanceError(f"{self.name}: {url}: {type(e).__name__}: {e}") from e
        except acme_errors.ClientError as e:
            resp = e.args[0] if e.args else None
            if isinstance(resp, tuple) and resp:
                resp = resp[0]
            if isinstance(resp, requests.Response):
                msg = f"{self.name}: {url}: HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code >= 500 or resp.status_code == 429:
                    raise TransientIssuanceError(msg) from e
                raise IssuanceError(msg) from e
            raise IssuanceError(f"{self.name}: {url}: {e}") from e
        except (acme_errors.Error, DeserializationError, ValueError, KeyError) as e:
            raise IssuanceError(
                f"{self.name}: {url}: unexpected answer: {type(e).__name__}: {e}"
            ) from e

    def _post(self, url: str, obj: Any) -> requests.Response:
        """Signed POST (obj None = POST-as-GET), retrying Pebble-style nonce rejections."""
        assert self._net is not None and self._directory is not None
        for attempt in range(_NONCE_ATTEMPTS):
            try:
                resp: requests.Response = self._net.post(
                    url, obj, new_nonce_url=self._directory["newNonce"]
                )
                return resp
            except messages.Error as e:
                if _code(e) != "badNonce" or attempt + 1 == _NONCE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- account

    def _load_or_create_key(self) -> tuple[JWK, JWASignature, bool]:
        path = self.account_key_path
        existed = True
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            existed = False
            data = self._create_key(path)
        except OSError as e:
            raise InputError(f"{path}: cannot read account key: {e}") from e
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise InputError(f"{path}: not an unencrypted PEM private key: {e}") from e
        if existed and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("%s: account key file is readable by group/others; use 0600", path)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            alg = {"secp256r1": ES256, "secp384r1": ES384, "secp521r1": ES512}
            if key.curve.name not in alg:
                raise InputError(f"{path}: unsupported EC curve {key.curve.name}")
            return JWKEC(key=key), alg[key.curve.name], existed
        if isinstance(key, rsa.RSAPrivateKey):
            return JWKRSA(key=key), RS256, existed
        raise InputError(f"{path}: unsupported account key type {type(key).__name__}")

    @staticmethod
    def _create_key(path: Path) -> bytes:
        """New EC P-256 key, 0600 from the start, written atomically and never over another key.

        Temp file + fsync, then link(2) into place: if another process created the key
        meanwhile, its key wins and is used (one account per key file, never two).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return path.read_bytes()
        finally:
            os.unlink(tmp)
        fsync_dir(path.parent)
        return data

    def _make_network(self, jwk: JWK, alg: JWASignature) -> acme_client.ClientNetwork:
        """The signed-HTTP layer (one keep-alive session per issuer); unit tests mount a fake.

        Its session is a `net.session()` (total deadline); ClientNetwork still passes verify,
        the User-Agent and the per-step timeout on every request.
        """
        verify: Any = str(self.ca_bundle) if self.ca_bundle is not None else True
        network = acme_client.ClientNetwork(
            jwk, alg=alg, verify_ssl=verify, user_agent=_USER_AGENT, timeout=int(self.timeout)
        )
        network.session.close()
        network.session = net.session(user_agent=_USER_AGENT)
        return network

    def _connect(self, deadline: datetime) -> None:
        if self._net is None:
            jwk, alg, self._key_existed = self._load_or_create_key()
            self._jwk = jwk
            self._net = self._make_network(jwk, alg)
        if self._directory is None:
            with self._step(self.directory_url, deadline):
                self._directory = acme_client.ClientV2.get_directory(self.directory_url, self._net)

    def _account(self, deadline: datetime) -> None:
        if self._regr is not None:
            return
        assert self._net is not None and self._directory is not None and self._jwk is not None
        url = self._directory["newAccount"]
        self._net.account = None
        if self._key_existed:
            try:
                with self._step(url, deadline):
                    resp = self._post(url, messages.NewRegistration(only_return_existing=True))
                    self._set_account(resp)
                    logger.info("%s: using existing account %s", self.name, self._regr_uri())
                    return
            except IssuanceError as e:
                cause = e.__cause__
                if not (
                    isinstance(cause, messages.Error) and _code(cause) == "accountDoesNotExist"
                ):
                    raise
        eab: dict[str, Any] | None = None
        if self.eab_kid is not None and self._eab_hmac_key is not None:
            try:
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=self._jwk.public_key(),
                    kid=self.eab_kid,
                    hmac_key=self._eab_hmac_key,
                    directory=self._directory,
                )
            except (binascii.Error, ValueError, DeserializationError) as e:
                raise IssuanceError(
                    f"{self.name}: eab_hmac_key is not valid base64url (kid {self.eab_kid!r})"
                ) from e
        reg = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True, external_account_binding=eab
        )
        with self._step(url, deadline):
            resp = self._post(url, reg)
            self._set_account(resp)
        logger.info("%s: registered account %s", self.name, self._regr_uri())

    def _set_account(self, resp: requests.Response) -> None:
        assert self._net is not None
        location = resp.headers.get("Location")
        if not location:
            raise IssuanceError(f"{self.name}: newAccount answered without a Location header")
        self._regr = messages.RegistrationResource(
            body=messages.Registration.from_json(resp.json()), uri=location
        )
        self._net.account = self._regr

    def _regr_uri(self) -> str:
        return self._regr.uri if self._regr is not None else "?"

    # ------------------------------------------------------------------- order

    def _issue_once(
        self,
        csr: x509.CertificateSigningRequest,
        csr_pem: bytes,
        deadline: datetime,
        replaces: str | None,
    ) -> Issued:
        self._connect(deadline)
        self._account(deadline)
        order_url, order = self._new_order(csr, deadline, replaces)
        self._solve(order, deadline)
        return self._finalize(csr, order_url, order, deadline)

    def _supports_ari(self) -> bool:
        assert self._directory is not None
        try:
            self._directory["renewalInfo"]
        except KeyError:
            return False
        return True

    def _new_order(
        self, csr: x509.CertificateSigningRequest, deadline: datetime, replaces: str | None
    ) -> tuple[str, messages.Order]:
        assert self._directory is not None
        url = self._directory["newOrder"]
        send_replaces = replaces
        if replaces is not None and not self._supports_ari():
            # RFC 9773: `replaces` only means something to a CA that offers renewalInfo;
            # a CA without it may reject the unknown field (Pebble 2.4 does).
            logger.info("%s: CA has no renewalInfo; newOrder sent without replaces", self.name)
            send_replaces = None
        msg = NewOrderWithReplaces(identifiers=_identifiers(csr), replaces=send_replaces)
        try:
            with self._step(url, deadline):
                resp = self._post(url, msg)
        except IssuanceError as e:
            cause = e.__cause__
            already = isinstance(cause, acme_errors.ConflictError) or (
                isinstance(cause, messages.Error) and _code(cause) == "alreadyReplaced"
            )
            if send_replaces is None or not already:
                raise
            # the old certificate was already replaced by another order: still issue
            logger.info("%s: %s; retrying newOrder without replaces", self.name, e)
            msg = NewOrderWithReplaces(identifiers=_identifiers(csr))
            with self._step(url, deadline):
                resp = self._post(url, msg)
        with self._step(url, deadline):
            order = messages.Order.from_json(resp.json())
            order_url = resp.headers["Location"]
        return order_url, order

    def _solve(self, order: messages.Order, deadline: datetime) -> None:
        """Answer every pending authorization with the solver's challenge type.

        HTTP-01: present a token, answer its challenge, one authorization after the other.
        DNS-01: present every TXT record of the order first, wait once until the zone's
        authoritative servers answer them all, then answer the challenges. Whatever was
        presented is cleaned up afterwards, after a success or a failure."""
        assert self._jwk is not None
        kind = self.challenge_type
        wanted = _CHALLENGE_TYPES[kind]
        pending: list[str] = []
        answers: list[tuple[str, Any]] = []
        presented: list[tuple[str, str]] = []  # (token or identifier, validation)
        try:
            for authz_url in order.authorizations:
                with self._step(authz_url, deadline):
                    authz = messages.Authorization.from_json(self._post(authz_url, None).json())
                if authz.status == messages.STATUS_VALID:
                    continue  # reused authorization
                ident = authz.identifier.value
                if authz.status != messages.STATUS_PENDING:
                    raise IssuanceError(
                        f"{self.name}: {authz_url}: authorization for {ident} is"
                        f" {authz.status.name}"
                    )
                challb = next((c for c in authz.challenges if isinstance(c.chall, wanted)), None)
                if challb is None:
                    offered = ", ".join(str(c.chall.typ) for c in authz.challenges) or "none"
                    raise IssuanceError(
                        f"{self.name}: {authz_url}: the CA offers no {kind} challenge for"
                        f" {'*.' if authz.wildcard else ''}{ident} (offered: {offered});"
                        " choose another challenge type for this site"
                    )
                response, validation = challb.response_and_validation(self._jwk)
                if kind == "dns-01":
                    self.solver.present(ident, validation, deadline=self._monotonic(deadline))
                    presented.append((ident, validation))
                    answers.append((challb.uri, response))
                else:
                    token = challb.chall.encode("token")
                    self.solver.present(token, validation)
                    presented.append((token, validation))
                    with self._step(challb.uri, deadline):
                        self._post(challb.uri, response)
                pending.append(authz_url)
            if answers:
                self.solver.wait(deadline=self._monotonic(deadline))
                for uri, response in answers:
                    with self._step(uri, deadline):
                        self._post(uri, response)
            for authz_url in pending:
                authz = self._poll_authz(authz_url, deadline)
                if authz.status != messages.STATUS_VALID:
                    errors = [_problem(c.error) for c in authz.challenges if c.error is not None]
                    raise IssuanceError(
                        f"{self.name}: {authz_url}: validation of {authz.identifier.value}"
                        f" failed ({authz.status.name}): {'; '.join(errors) or 'no detail'}"
                    )
        finally:
            # one cleanup deadline for the order's records: a DNS that stopped answering costs
            # one cleanup_timeout, not one per record, before the order goes on to finalize
            until = time.monotonic() + (self.solver.cleanup_timeout if kind == "dns-01" else 0)
            for what, validation in presented:
                if kind == "dns-01":
                    self.solver.cleanup(what, validation, deadline=until)
                else:
                    self.solver.cleanup(what)

    def _monotonic(self, deadline: datetime) -> float:
        return time.monotonic() + self._remaining(deadline)

    def _poll_authz(self, url: str, deadline: datetime) -> messages.Authorization:
        delay = self.poll_initial
        while True:
            with self._step(url, deadline):
                authz: messages.Authorization = messages.Authorization.from_json(
                    self._post(url, None).json()
                )
            if authz.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                return authz
            self._pause(url, delay, deadline, f"authorization still {authz.status.name}")
            delay = min(delay * 1.5, self.poll_cap)

    def _pause(self, url: str, delay: float, deadline: datetime, what: str) -> None:
        remaining = self._remaining(deadline)
        if remaining <= 0:
            raise _DeadlineReached(f"{self.name}: {url}: {what} at the deadline")
        self._sleep(min(delay, remaining))

    def _finalize(
        self,
        csr: x509.CertificateSigningRequest,
        order_url: str,
        order: messages.Order,
        deadline: datetime,
    ) -> Issued:
        delay = self.poll_initial
        finalized = False
        while True:
            status = order.status
            if status == messages.STATUS_INVALID:
                detail = _problem(order.error) if order.error is not None else "no detail"
                raise IssuanceError(f"{self.name}: {order_url}: order is invalid: {detail}")
            if status == messages.STATUS_VALID and order.certificate:
                return self._download(csr, order.certificate, deadline)
            if status == messages.STATUS_READY and not finalized:
                with self._step(order.finalize, deadline):
                    resp = self._post(order.finalize, messages.CertificateRequest(csr=csr))
                    order = messages.Order.from_json(resp.json())
                finalized = True
                continue
            self._pause(order_url, delay, deadline, f"order still {status.name}")
            delay = min(delay * 1.5, self.poll_cap)
            with self._step(order_url, deadline):
                order = messages.Order.from_json(self._post(order_url, None).json())

    def _download(
        self, csr: x509.CertificateSigningRequest, cert_url: str, deadline: datetime
    ) -> Issued:
        with self._step(cert_url, deadline):
            resp = self._post(cert_url, None)
            chains = [resp.content]
            # every alternate chain the CA offers is kept (docs/chains.md), inside the deadline
            if "Link" in resp.headers:
                for link in parse_header_links(resp.headers["Link"]):
                    if link.get("rel") == "alternate" and link.get("url"):
                        chains.append(self._post(link["url"], None).content)
        parsed: list[list[x509.Certificate]] = []
        for i, pem in enumerate(chains):
            try:
                certs = x509.load_pem_x509_certificates(pem)
            except ValueError as e:
                raise IssuanceError(
                    f"{self.name}: {cert_url}: chain {i} is not PEM certificates: {e}"
                ) from e
            parsed.append(certs)
        chosen = parsed[0]
        if self.preferred_chain is not None:
            for certs in parsed:
                if _top_issuer_cn(certs[1:] or certs) == self.preferred_chain:
                    chosen = certs
                    break
            else:
                logger.info(
                    "%s: no chain tops out at %r; using the default chain",
                    self.name, self.preferred_chain,
                )  # fmt: skip
        leaf, rest = chosen[0], chosen[1:]
        if leaf.public_key() != csr.public_key():
            raise IssuanceError(f"{self.name}: {cert_url}: leaf key does not match the CSR key")
        alternates: list[bytes] = []
        for i, certs in enumerate(parsed):
            if certs is chosen:
                continue
            if not certs or certs[0] != leaf:
                raise IssuanceError(f"{self.name}: {cert_url}: alternate chain {i} does not "
                                    "start with the certificate's leaf")
            alternates.append(_pem([c for c in certs[1:] if not _self_issued(c)]))
        intermediates = [c for c in rest if not _self_issued(c)]  # "no root", even if sent
        logger.info("%s: certificate serial %x from %s (%d chain(s))", self.name,
                    leaf.serial_number, cert_url, len(parsed))
        return Issued(leaf_pem=_pem([leaf]), chain_pem=_pem(intermediates), ca=self.name,
                      alt_chains_pem=tuple(alternates))
