"""Completing a chain from AIA caIssuers against a loopback "lab" URL: bounded, cached,
verified (certfailover.aia)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from certfailover.aia import IssuerFetcher, ca_issuers_urls, parse_certs
from certfailover.chains import ChainJudge
from certfailover.health import BundleStores
from certfailover.sitetrust import PemBundle
from certfailover.testing import pki

DOMAIN = "www.example.test"
DER = serialization.Encoding.DER


class Lab:
    """Static bodies by path over loopback HTTP; `drip` paths send one byte every 0.2 s."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.drip: set[str] = set()
        self.hits: dict[str, int] = {}
        lab = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                lab.hits[self.path] = lab.hits.get(self.path, 0) + 1
                body = lab.bodies.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-cert")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1] if self.path in lab.drip else body[i:])
                        self.wfile.flush()
                        if self.path not in lab.drip:
                            break
                        time.sleep(0.2)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def lab() -> Iterator[Lab]:
    srv = Lab()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def ca_with_aia(parent: pki.Authority, cn: str, url: str,
                key: ec.EllipticCurvePrivateKey | None = None) -> pki.Authority:
    """An intermediate whose AIA names `url` as caIssuers."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    nb = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(parent.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(nb + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                parent.key.public_key()), critical=False)  # type: ignore[arg-type]
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))]),
                critical=False)
            .sign(parent.key, hashes.SHA256()))  # type: ignore[arg-type]
    return pki.Authority(cert, key, parent)


class Pki:
    """root -> i1 -> i2 -> leaf; i2 names /i1.der as caIssuers, i1 names /root.der."""

    def __init__(self, lab: Lab) -> None:
        self.root = pki.make_root("AIA Root")
        self.i1 = ca_with_aia(self.root, "AIA Intermediate 1", lab.url("/root.der"))
        self.i2 = ca_with_aia(self.i1, "AIA Intermediate 2", lab.url("/i1.der"))
        self.leaf, self.key = pki.make_leaf(self.i2, [DOMAIN])
        lab.bodies["/i1.der"] = self.i1.cert.public_bytes(DER)
        lab.bodies["/root.der"] = self.root.cert.public_bytes(DER)


def test_a_missing_intermediate_is_fetched_verified_and_cached(lab: Lab, tmp_path: Path) -> None:
    p = Pki(lab)
    fetcher = IssuerFetcher(timeout=2)
    assert ca_issuers_urls(p.i2.cert) == [lab.url("/i1.der")]
    done = fetcher.complete(p.leaf, [p.i2.cert])
    assert done == (p.i2.cert, p.i1.cert), "i1 added; the root (self-issued) is not"
    assert lab.hits == {"/i1.der": 1, "/root.der": 1}
    assert fetcher.complete(p.leaf, [p.i2.cert]) == done
    assert lab.hits == {"/i1.der": 1, "/root.der": 1}, "cached per URL"
    assert fetcher.complete(p.leaf, [p.i2.cert, p.i1.cert]) is None, "nothing missing"
    # the completed chain validates where the chain as sent does not
    bundle = PemBundle(pki.write_bundle(tmp_path / "roots.pem", p.root))
    judge = ChainJudge(BundleStores(), None)
    paths = judge.judge(p.leaf, [(p.i2.cert,), done], [bundle], DOMAIN,
                        dt.datetime.now(dt.UTC))
    assert [v.ok for v in paths] == [False, True]
    [pem] = fetcher.completions(p.leaf, [[p.i2.cert]])
    assert x509.load_pem_x509_certificates(pem) == list(done)


def test_a_certificate_that_did_not_sign_is_not_used(lab: Lab) -> None:
    p = Pki(lab)
    impostor = ca_with_aia(p.root, "AIA Intermediate 1", lab.url("/root.der"))  # same name
    lab.bodies["/i1.der"] = impostor.cert.public_bytes(DER)
    assert IssuerFetcher(timeout=2).complete(p.leaf, [p.i2.cert]) is None


def test_a_dripping_url_is_cut_at_the_deadline(lab: Lab) -> None:
    p = Pki(lab)
    lab.drip.add("/i1.der")
    fetcher = IssuerFetcher(timeout=1.0)
    t0 = time.monotonic()
    assert fetcher.complete(p.leaf, [p.i2.cert]) is None
    assert time.monotonic() - t0 < 2.5, "bounded by the total deadline, not per read"
    t0 = time.monotonic()
    assert fetcher.complete(p.leaf, [p.i2.cert]) is None
    assert time.monotonic() - t0 < 0.2, "the failure is cached for a while"


def test_unreachable_and_missing_urls_are_none(lab: Lab) -> None:
    p = Pki(lab)
    del lab.bodies["/i1.der"]
    assert IssuerFetcher(timeout=2).complete(p.leaf, [p.i2.cert]) is None


def test_parse_certs_reads_der_pem_and_pkcs7() -> None:
    root = pki.make_root("R")
    der = root.cert.public_bytes(DER)
    p7 = pkcs7.serialize_certificates([root.cert], DER)
    for body in (der, root.pem, p7):
        assert parse_certs(body, "x") == [root.cert]
    with pytest.raises(ValueError, match="lab-url: not a certificate"):
        parse_certs(b"<html>", "lab-url")


def test_the_callers_deadline_bounds_every_fetch_together(lab: Lab) -> None:
    """An order's AIA completion ends by the order's deadline (`until`), however long each
    fetch may take: a dripping URL under a 5 s fetch timeout is cut at `until`."""
    p = Pki(lab)
    lab.drip.add("/i1.der")
    fetcher = IssuerFetcher(timeout=5.0)
    t0 = time.monotonic()
    assert fetcher.complete(p.leaf, [p.i2.cert], until=t0 + 0.6) is None
    assert time.monotonic() - t0 < 1.5, "cut at the caller's deadline, not the fetch timeout"


def test_no_fetch_once_the_callers_time_is_up_and_nothing_is_remembered(lab: Lab) -> None:
    p = Pki(lab)
    fetcher = IssuerFetcher(timeout=2)
    assert fetcher.completions(p.leaf, [[p.i2.cert]], until=time.monotonic() - 1) == []
    assert lab.hits == {}, "no request once the time is up"
    assert fetcher.complete(p.leaf, [p.i2.cert]) == (p.i2.cert, p.i1.cert), \
        "the skipped URL was not cached as failed: the next completion fetches it"
