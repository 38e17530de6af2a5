"""OCSP (RFC 6960 / RFC 5019): build requests, verify responses, never trust an unverified one.

`verify_response` accepts a response only if it is signed by the issuer itself or by a
delegated responder (OCSP-signing EKU, directly issued by the issuer, valid now), its
CertID matches the request, and thisUpdate/nextUpdate bracket `now` (with a skew allowance).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from .result import InvalidRevocationData, RevocationResult, Status

__all__ = ["OCSPAnswer", "aia_ocsp_urls", "build_request", "get_url", "verify_response"]

DEFAULT_SKEW = timedelta(minutes=5)
# Without nextUpdate a response is used for at most this long after thisUpdate.
NO_NEXT_UPDATE_MAX_AGE = timedelta(hours=1)


def aia_ocsp_urls(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
        and d.access_location.value.lower().startswith(("http://", "https://"))
    )


def build_request(leaf: x509.Certificate, issuer: x509.Certificate,
                  algorithm: hashes.HashAlgorithm | None = None) -> ocsp.OCSPRequest:
    alg = algorithm if algorithm is not None else hashes.SHA1()  # RFC 5019 profile
    return ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, alg).build()


def get_url(base: str, request_der: bytes) -> str:
    """RFC 6960 A.1 GET form: base URL '/' url-encoded base64 of the DER request."""
    b64 = base64.b64encode(request_der).decode("ascii")
    return base.rstrip("/") + "/" + quote(b64, safe="")


@dataclass(frozen=True)
class OCSPAnswer:
    result: RevocationResult
    this_update: datetime
    next_update: datetime | None
    cache_until: datetime  # half of the validity interval


def _verify_signature(public_key: object, resp: ocsp.OCSPResponse, source: str) -> None:
    try:
        sig, data = resp.signature, resp.tbs_response_bytes
        alg = resp.signature_hash_algorithm
        if isinstance(public_key, rsa.RSAPublicKey):
            if alg is None:
                raise InvalidRevocationData(source, "unsupported RSA signature algorithm")
            public_key.verify(sig, data, padding.PKCS1v15(), alg)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if alg is None:
                raise InvalidRevocationData(source, "unsupported ECDSA signature algorithm")
            public_key.verify(sig, data, ec.ECDSA(alg))
        elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(sig, data)
        else:
            raise InvalidRevocationData(source, f"unsupported key type {type(public_key).__name__}")
    except InvalidSignature:
        raise InvalidRevocationData(source, "OCSP response signature does not verify") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InvalidRevocationData(source, f"OCSP signature cannot be checked: {e}") from None


def _key_hash(cert: x509.Certificate) -> bytes:
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _is_responder(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_name is not None:
        return resp.responder_name == cert.subject
    return resp.responder_key_hash == _key_hash(cert)


def _signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime,
            skew: timedelta, source: str) -> x509.Certificate:
    if _is_responder(resp, issuer):
        return issuer
    for cand in resp.certificates:
        if not _is_responder(resp, cand):
            continue
        try:
            cand.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise InvalidRevocationData(source, f"delegated responder not issued by the issuer: "
                                                f"{e or 'bad signature'}") from None
        try:
            eku = cand.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            raise InvalidRevocationData(source, "delegated responder lacks the OCSP-signing EKU"
                                        ) from None
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise InvalidRevocationData(source, "delegated responder lacks the OCSP-signing EKU")
        if not (cand.not_valid_before_utc - skew <= now <= cand.not_valid_after_utc + skew):
            raise InvalidRevocationData(source, "delegated responder certificate is not valid now")
        return cand
    raise InvalidRevocationData(source, "OCSP response not signed by the issuer or a delegate")


def verify_response(der: bytes, *, leaf: x509.Certificate, issuer: x509.Certificate,
                    request: ocsp.OCSPRequest, now: datetime, source: str,
                    skew: timedelta = DEFAULT_SKEW) -> OCSPAnswer:
    """Verify an OCSP response for `leaf`; raise InvalidRevocationData naming `source`."""
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        raise InvalidRevocationData(source, f"not an OCSP response: {e}") from None
    if resp.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise InvalidRevocationData(source, f"OCSP status {resp.response_status.name}")
    try:
        signer = _signer(resp, issuer, now, skew, source)
        _verify_signature(signer.public_key(), resp, source)
        single = None
        for s in resp.responses:
            if (s.serial_number == request.serial_number
                    and s.issuer_name_hash == request.issuer_name_hash
                    and s.issuer_key_hash == request.issuer_key_hash
                    and type(s.hash_algorithm) is type(request.hash_algorithm)):
                single = s
                break
    except (ValueError, UnsupportedAlgorithm) as e:  # malformed inner structures
        raise InvalidRevocationData(source, f"malformed OCSP response: {e}") from None
    if single is None:
        raise InvalidRevocationData(source, "OCSP response has no CertID matching the request")
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > now + skew:
        raise InvalidRevocationData(source, f"thisUpdate {this_update.isoformat()} is in the future")
    expires = next_update if next_update is not None else this_update + NO_NEXT_UPDATE_MAX_AGE
    if expires < now - skew:
        raise InvalidRevocationData(source, f"OCSP response is stale (valid until "
                                            f"{expires.isoformat()})")
    cache_until = this_update + (expires - this_update) / 2
    st = single.certificate_status
    if st is ocsp.OCSPCertStatus.GOOD:
        result = RevocationResult(Status.GOOD, "ocsp", source)
    elif st is ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason
        result = RevocationResult(Status.REVOKED, "ocsp", source,
                                  reason.name if reason is not None else "unspecified",
                                  single.revocation_time_utc)
    else:
        result = RevocationResult(Status.UNKNOWN, "ocsp", source, "responder says unknown")
    return OCSPAnswer(result, this_update, next_update, cache_until)
