from __future__ import annotations

import json
from datetime import timedelta
from http.server import BaseHTTPRequestHandler

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from revpki import NOW, PKI, Route, TestServer, context, make_ca, make_crl, make_ocsp

from certfailover.checks import Check
from certfailover.fetch import Fetcher, Response
from certfailover.model import RevocationMode, Severity, Signal
from certfailover.revocation import CASources, RevocationCheck, RevocationConfig, ari_cert_id
from certfailover.testing.pki import material

DER = serialization.Encoding.DER


def check_for(server: TestServer, **ca: object) -> RevocationCheck:
    return RevocationCheck(RevocationConfig(cas={"ca-a": CASources(**ca)},  # type: ignore[arg-type]
                                            timeout=1.0, max_crl_bytes=100_000))


def crl_bytes(pki: PKI, revoked: dict[int, x509.ReasonFlags | None], **kw: object) -> bytes:
    return make_crl(pki.issuer, pki.issuer_key, revoked, **kw).public_bytes(DER)  # type: ignore[arg-type]


def test_is_a_check() -> None:
    assert isinstance(RevocationCheck(), Check)
    assert RevocationCheck.name == "revocation"


def test_crl_revoked_fails_with_reason(pki: PKI, server: TestServer) -> None:
    leaf = pki.leaf(serial=4242)
    server.routes["/ca.crl"] = Route(body=crl_bytes(pki, {4242: x509.ReasonFlags.key_compromise}))
    chk = check_for(server, crl_urls=(server.url("/ca.crl"),))
    [f] = chk.run(material(leaf, [pki.issuer], ca="ca-a"), context())
    assert f.check == "revocation" and f.severity is Severity.FAIL
    assert "crl" in f.reason and "key_compromise" in f.reason
    assert f.revoked and f.known and f.detail["source"] == "crl"
    assert f.detail["reason"] == "key_compromise" and f.detail["key_compromise"] is True


def test_crl_from_certificate_cdp_good(pki: PKI, server: TestServer) -> None:
    server.routes["/dp.crl"] = Route(body=crl_bytes(pki, {1: None}))
    leaf = pki.leaf(serial=2, cdp=(server.url("/dp.crl"),))
    [f] = RevocationCheck().run(material(leaf, [pki.issuer], ca="ca-a"), context())
    assert f.severity is Severity.OK and not f.revoked and f.known and f.detail == {
        "status": "good", "source": "crl", "url": server.url("/dp.crl")}
    assert f.next_due == {Signal.CRL: NOW + timedelta(days=1)}  # the scheduler's hint


def test_ocsp_revoked_and_good_by_get(pki: PKI, server: TestServer) -> None:
    revoked, good = pki.leaf(ocsp_urls=(server.url("/ocsp"),)), pki.leaf(
        ocsp_urls=(server.url("/ocsp"),))
    answers = {revoked.serial_number: ocsp.OCSPCertStatus.REVOKED,
               good.serial_number: ocsp.OCSPCertStatus.GOOD}

    def responder(h: BaseHTTPRequestHandler, body: bytes) -> None:
        import base64
        from urllib.parse import unquote
        der = body or base64.b64decode(unquote(h.path.split("/ocsp/", 1)[1]))
        serial = ocsp.load_der_ocsp_request(der).serial_number
        leaf = revoked if serial == revoked.serial_number else good
        st = answers[serial]
        out = make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key, status=st,
                        reason=x509.ReasonFlags.cessation_of_operation
                        if st is ocsp.OCSPCertStatus.REVOKED else None)
        h.send_response(200)
        h.send_header("Content-Length", str(len(out)))
        h.end_headers()
        h.wfile.write(out)

    server.routes["/ocsp/*"] = responder
    chk = RevocationCheck()
    [f] = chk.run(material(revoked, [pki.issuer], ca="ca-a"), context())
    assert f.severity is Severity.FAIL and f.detail["source"] == "ocsp"
    assert f.detail["reason"] == "cessation_of_operation" and not f.detail["key_compromise"]
    [g] = chk.run(material(good, [pki.issuer], ca="ca-a"), context())
    assert g.severity is Severity.OK
    assert all(r[0] == "GET" for r in server.requests)
    assert g.next_due[Signal.OCSP] == NOW + timedelta(hours=11)
    n = len(server.requests)
    # valid 12 h (thisUpdate NOW-1h): reused until min(half its validity, ocsp_max_age 1 h)
    chk.run(material(good, [pki.issuer], ca="ca-a"), context(NOW + timedelta(minutes=59)))
    assert len(server.requests) == n
    chk.run(material(good, [pki.issuer], ca="ca-a"), context(NOW + timedelta(hours=1)))
    assert len(server.requests) == n + 1
    short = RevocationCheck(RevocationConfig(ocsp_max_age=timedelta(days=1)))
    short.run(material(good, [pki.issuer], ca="ca-a"), context())
    n = len(server.requests)
    short.run(material(good, [pki.issuer], ca="ca-a"), context(NOW + timedelta(hours=4, minutes=59)))
    assert len(server.requests) == n  # half of the validity: thisUpdate + 6 h
    short.run(material(good, [pki.issuer], ca="ca-a"), context(NOW + timedelta(hours=5)))
    assert len(server.requests) == n + 1


def _bad_routes(pki: PKI, leaf: x509.Certificate) -> dict[str, Route]:
    forger = make_ca("Test Intermediate")
    other = make_ca("Other CA")
    serial = leaf.serial_number
    kc = x509.ReasonFlags.key_compromise
    return {
        "forged": Route(body=make_crl(pki.issuer, forger[1], {serial: kc}).public_bytes(DER)),
        "wrong_issuer": Route(body=make_crl(other[0], other[1], {serial: kc}).public_bytes(DER)),
        "expired": Route(body=crl_bytes(pki, {serial: kc}, this_update=NOW - timedelta(days=9),
                                        next_update=NOW - timedelta(days=2))),
        "garbage": Route(body=b"\x30\x82\x01\x00 this is not a CRL"),
        "huge": Route(body=b"\x30" * 200_000),
        "slow": Route(body=crl_bytes(pki, {serial: kc}), delay=2.0),
        "trickle": Route(body=crl_bytes(pki, {serial: kc}), trickle=0.01),
        "reset": Route(body=crl_bytes(pki, {serial: kc}), reset=True),
        "error": Route(status=500),
        "missing": Route(status=404),
        "html": Route(body=b"<html>captive portal</html>"),
    }


@pytest.mark.parametrize("kind", ["forged", "wrong_issuer", "expired", "garbage", "huge", "slow",
                                  "trickle", "reset", "error", "missing", "html"])
def test_bad_crl_is_unknown_never_revoked_nor_good(pki: PKI, server: TestServer,
                                                   kind: str) -> None:
    leaf = pki.leaf()
    server.routes["/bad.crl"] = _bad_routes(pki, leaf)[kind]
    chk = check_for(server, crl_urls=(server.url("/bad.crl"),))
    findings = chk.run(material(leaf, [pki.issuer], ca="ca-a"), context())
    assert [f.severity for f in findings] == [Severity.WARN]
    assert not findings[0].known and not findings[0].revoked
    assert findings[0].detail["since"] == NOW.isoformat()
    assert server.url("/bad.crl") in findings[0].reason


@pytest.mark.parametrize("kind", ["forged_key", "other_cert", "garbage", "stale", "no_eku",
                                  "unsuccessful"])
def test_bad_ocsp_is_unknown(pki: PKI, server: TestServer, kind: str) -> None:
    leaf = pki.leaf(ocsp_urls=(server.url("/o"),))
    forger = make_ca("Test Intermediate")
    rev = ocsp.OCSPCertStatus.REVOKED
    body = {
        "forged_key": lambda: make_ocsp(leaf, pki.issuer, forger[0], forger[1], status=rev,
                                        include_signer=False),
        "other_cert": lambda: make_ocsp(pki.leaf(), pki.issuer, pki.issuer, pki.issuer_key,
                                        status=rev),
        "garbage": lambda: b"\x30\x03\x0a\x01\x00",
        "stale": lambda: make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key, status=rev,
                                   this_update=NOW - timedelta(days=3),
                                   next_update=NOW - timedelta(days=1)),
        "no_eku": lambda: make_ocsp(leaf, pki.issuer, *pki.responder(eku=False), status=rev),
        "unsuccessful": lambda: ocsp.OCSPResponseBuilder.build_unsuccessful(
            ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(DER),
    }[kind]()
    server.routes["/o/*"] = Route(body=body)
    [f] = RevocationCheck(RevocationConfig(timeout=1.0)).run(material(leaf, [pki.issuer], ca="ca-a"),
                                                             context())
    assert f.severity is Severity.WARN and not f.known


def test_forged_crl_does_not_mask_a_good_ocsp(pki: PKI, server: TestServer) -> None:
    leaf = pki.leaf(ocsp_urls=(server.url("/o"),))
    server.routes["/bad.crl"] = _bad_routes(pki, leaf)["forged"]
    server.routes["/o/*"] = Route(body=make_ocsp(leaf, pki.issuer, pki.issuer, pki.issuer_key))
    chk = check_for(server, crl_urls=(server.url("/bad.crl"),))
    [f] = chk.run(material(leaf, [pki.issuer], ca="ca-a"), context())
    assert f.severity is Severity.OK and f.detail["source"] == "ocsp"


def test_hard_fail_after_long_unknown(pki: PKI, server: TestServer) -> None:
    """When the status became unknown is the stored clock handed in by the engine
    (ctx.unknown_since), not the check's memory: a fresh check object judges alike."""
    server.routes["/e.crl"] = Route(status=503)
    cfg = RevocationConfig(cas={"ca-a": CASources(crl_urls=(server.url("/e.crl"),))},
                           hard_fail_after=timedelta(hours=24), failure_backoff=timedelta(0))
    m = material(pki.leaf(), [pki.issuer], ca="ca-a")
    hard = RevocationMode.HARD_FAIL
    first = RevocationCheck(cfg).run(m, context(revocation=hard))[0]
    assert first.severity is Severity.WARN and not first.known
    assert first.detail["since"] == NOW.isoformat()
    later = NOW + timedelta(hours=25)
    since = {(m.cert.id, "revocation"): NOW}
    soft = RevocationCheck(cfg).run(m, context(later, unknown_since=since))[0]
    assert soft.severity is Severity.WARN and soft.detail["since"] == NOW.isoformat()
    failed = RevocationCheck(cfg).run(m, context(later, revocation=hard, unknown_since=since))[0]
    assert failed.severity is Severity.FAIL and not failed.known and not failed.revoked
    # a streak younger than the limit, or another certificate's, is still a warning
    young = {(m.cert.id, "revocation"): later - timedelta(hours=23)}
    assert RevocationCheck(cfg).run(m, context(later, revocation=hard, unknown_since=young)
                                    )[0].severity is Severity.WARN
    other = {("site/ca-a/other", "revocation"): NOW}
    assert RevocationCheck(cfg).run(m, context(later, revocation=hard, unknown_since=other)
                                    )[0].severity is Severity.WARN
    # a verified answer is good whatever the clock says
    server.routes["/e.crl"] = Route(body=crl_bytes(pki, {}, this_update=later,
                                                   next_update=later + timedelta(days=1)))
    ok = RevocationCheck(cfg).run(m, context(later, revocation=hard, unknown_since=since))[0]
    assert ok.severity is Severity.OK and ok.known


def test_no_issuer_or_no_source_is_unknown(pki: PKI) -> None:
    [f] = RevocationCheck().run(material(pki.leaf(), ca="ca-a"), context())
    assert f.severity is Severity.WARN and "issuer" in f.reason
    [g] = RevocationCheck().run(material(pki.leaf(), [pki.issuer], ca="ca-a"), context())
    assert g.severity is Severity.WARN and not g.known


def test_many_certificates_share_one_crl_download(pki: PKI, server: TestServer) -> None:
    leaves = [pki.leaf(serial=10_000 + i) for i in range(60)]
    route = Route(body=crl_bytes(pki, {10_007: None, 10_011: x509.ReasonFlags.superseded}),
                  delay=0.2, headers={"ETag": '"v1"'})
    server.routes["/shared.crl"] = route
    chk = check_for(server, crl_urls=(server.url("/shared.crl"),))
    out = chk.run_many([material(leaf, [pki.issuer], ca="ca-a") for leaf in leaves], context())
    chk.close()
    assert route.hits == 1 and chk.crls.downloads == 1
    failed = sorted(cid for cid, fs in out.items() if fs[0].severity is Severity.FAIL)
    assert failed == [f"www/ca-a/{10_007:x}", f"www/ca-a/{10_011:x}"]
    assert sum(fs[0].severity is Severity.OK for fs in out.values()) == 58


def test_conditional_refresh_with_etag(pki: PKI, server: TestServer) -> None:
    body = crl_bytes(pki, {}, next_update=NOW + timedelta(days=7))
    seen: list[str | None] = []

    def conditional(h: BaseHTTPRequestHandler, _: bytes) -> None:
        seen.append(h.headers.get("If-None-Match"))
        if h.headers.get("If-None-Match") == '"v1"':
            h.send_response(304)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("ETag", '"v1"')
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    server.routes["/c.crl"] = conditional
    chk = check_for(server, crl_urls=(server.url("/c.crl"),))
    m = material(pki.leaf(), [pki.issuer], ca="ca-a")
    for t in (NOW, NOW + timedelta(minutes=2), NOW + timedelta(minutes=5),
              NOW + timedelta(hours=2)):
        assert chk.run(m, context(t))[0].severity is Severity.OK
    # revalidated every 5 min whatever the 7-day nextUpdate; unchanged: 304, no body
    assert seen == [None, '"v1"', '"v1"'] and chk.crls.downloads == 1
    assert chk.crls.not_modified == 2 and chk.crls.requests == 3


def test_crl_disk_cache_survives_restart(pki: PKI, server: TestServer, tmp_path: object) -> None:
    from pathlib import Path
    route = Route(body=crl_bytes(pki, {}))
    server.routes["/d.crl"] = route
    cfg = RevocationConfig(cas={"ca-a": CASources(crl_urls=(server.url("/d.crl"),))},
                           cache_dir=Path(str(tmp_path)))
    m = material(pki.leaf(), [pki.issuer], ca="ca-a")
    assert RevocationCheck(cfg).run(m, context())[0].severity is Severity.OK
    assert RevocationCheck(cfg).run(m, context())[0].severity is Severity.OK
    assert route.hits == 1


def _ari_doc(start: object, end: object, url: str | None = None) -> bytes:
    d: dict[str, object] = {"suggestedWindow": {"start": start.isoformat(),  # type: ignore[attr-defined]
                                                "end": end.isoformat()}}  # type: ignore[attr-defined]
    if url:
        d["explanationURL"] = url
    return json.dumps(d).encode()


def test_ari_window_started_asks_for_replacement(pki: PKI, server: TestServer) -> None:
    leaf = pki.leaf()
    aid = ari_cert_id(leaf)
    server.routes["/dir"] = Route(body=json.dumps(
        {"renewalInfo": server.url("/ari")}).encode())
    server.routes[f"/ari/{aid}"] = Route(
        body=_ari_doc(NOW - timedelta(hours=1), NOW + timedelta(hours=1), "https://ca/why"),
        headers={"Retry-After": "600"})
    chk = check_for(server, directory_url=server.url("/dir"))
    findings = chk.run(material(leaf, [pki.issuer], ca="ca-a"), context())
    ari = next(f for f in findings if f.check == "ari")
    assert ari.severity is Severity.WARN and ari.replace and ari.flagged
    assert ari.ari_id == aid and ari.detail["explanation_url"] == "https://ca/why"
    assert ari.detail["window_start"] == (NOW - timedelta(hours=1)).isoformat()
    hits = server.routes[f"/ari/{aid}"].hits  # type: ignore[union-attr]
    chk.run(material(leaf, [pki.issuer], ca="ca-a"), context(NOW + timedelta(minutes=5)))
    assert server.routes[f"/ari/{aid}"].hits == hits  # type: ignore[union-attr]  # Retry-After
    chk.run(material(leaf, [pki.issuer], ca="ca-a"), context(NOW + timedelta(minutes=11)))
    assert server.routes[f"/ari/{aid}"].hits == hits + 1  # type: ignore[union-attr]


def test_ari_future_window_and_failures(pki: PKI, server: TestServer) -> None:
    leaf = pki.leaf()
    aid = ari_cert_id(leaf)
    server.routes[f"/ari/{aid}"] = Route(body=_ari_doc(NOW + timedelta(days=30),
                                                       NOW + timedelta(days=32)))
    chk = check_for(server, ari_url=server.url("/ari"))
    ari = next(f for f in chk.run(material(leaf, [pki.issuer], ca="ca-a"), context()) if f.check == "ari")
    assert ari.severity is Severity.OK and not ari.replace and ari.known
    other = pki.leaf()
    server.routes[f"/ari/{ari_cert_id(other)}"] = Route(body=b"{oops")
    bad = next(f for f in chk.run(material(other, [pki.issuer], ca="ca-a"), context()) if f.check == "ari")
    assert bad.severity is Severity.WARN and not bad.replace and not bad.known
    none = RevocationCheck().run(material(leaf, [pki.issuer], ca="ca-a"), context())
    assert [f.check for f in none] == ["revocation"]


class ExplodingFetcher(Fetcher):
    def fetch(self, url: str, **kw: object) -> Response:  # type: ignore[override]
        raise RuntimeError("boom")


def test_unexpected_errors_are_unknown_never_raised(pki: PKI) -> None:
    leaf = pki.leaf(ocsp_urls=("http://127.0.0.1:9/ocsp",), cdp=("http://127.0.0.1:9/a.crl",))
    chk = RevocationCheck(RevocationConfig(cas={"ca-a": CASources(ari_url="http://127.0.0.1:9/")}),
                          fetcher=ExplodingFetcher())
    findings = chk.run(material(leaf, [pki.issuer], ca="ca-a"), context())
    assert [(f.check, f.severity) for f in findings] == [("revocation", Severity.WARN),
                                                         ("ari", Severity.WARN)]
    assert not findings[0].known and not findings[1].known and not findings[1].replace


def test_public_names() -> None:
    import certfailover.revocation as rev
    assert sorted(rev.__all__) == sorted(n for n in rev.__all__ if hasattr(rev, n))
    assert {"RevocationCheck", "RevocationConfig", "CASources", "ari_cert_id"} <= set(rev.__all__)


def test_crl_sign_relaxed_per_ca_only(server: TestServer) -> None:
    no_crl_sign = make_ca("No CRL Sign", crl_sign=False)
    pki2 = PKI(no_crl_sign[0], no_crl_sign[1], no_crl_sign[0], no_crl_sign[1])
    server.routes["/n.crl"] = Route(body=crl_bytes(pki2, {}))
    m = material(pki2.leaf(), [pki2.issuer], ca="ca-a")
    strict = check_for(server, crl_urls=(server.url("/n.crl"),))
    assert strict.run(m, context())[0].severity is Severity.WARN
    relaxed = check_for(server, crl_urls=(server.url("/n.crl"),), require_crl_sign=False)
    assert relaxed.run(m, context())[0].severity is Severity.OK
