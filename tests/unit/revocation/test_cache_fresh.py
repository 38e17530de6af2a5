"""CRLCache freshness: conditional revalidation every 5 minutes whatever nextUpdate, one
request per URL for any number of concurrent callers, failures remembered only briefly."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from revpki import NOW, PKI, Route, TestServer, make_ca, make_crl

from certfailover.fetch import Fetcher
from certfailover.revocation.cache import CRLCache
from certfailover.revocation.result import InvalidRevocationData, Status

DER = serialization.Encoding.DER
WEEK = timedelta(days=7)


class Publisher:
    """A CA's CRL endpoint: ETag + Last-Modified, 304 on a match, re-publishable."""

    def __init__(self, pki: PKI, *, etag: bool = True, last_modified: bool = True) -> None:
        self.pki, self.etag, self.last_modified = pki, etag, last_modified
        self.seen: list[dict[str, str | None]] = []
        self.codes: list[int] = []
        self.lock = threading.Lock()
        self.version = 0
        self.publish({})

    def publish(self, revoked: dict[int, x509.ReasonFlags | None], *,
                this_update: datetime = NOW - timedelta(hours=1),
                next_update: datetime = NOW + WEEK) -> None:
        self.version += 1
        self.this_update = this_update
        self.body = make_crl(self.pki.issuer, self.pki.issuer_key, revoked,
                             this_update=this_update, next_update=next_update).public_bytes(DER)

    def __call__(self, h: BaseHTTPRequestHandler, _: bytes) -> None:
        inm, ims = h.headers.get("If-None-Match"), h.headers.get("If-Modified-Since")
        tag = f'"v{self.version}"'
        lm = format_datetime(self.this_update, usegmt=True)
        with self.lock:
            self.seen.append({"If-None-Match": inm, "If-Modified-Since": ims})
        if inm is not None and self.etag:
            same = inm == tag
        elif ims is not None and self.last_modified:
            same = parsedate_to_datetime(ims) >= self.this_update
        else:
            same = False
        h.send_response(304 if same else 200)
        if self.etag:
            h.send_header("ETag", tag)
        if self.last_modified:
            h.send_header("Last-Modified", lm)
        body = b"" if same else self.body
        h.send_header("Content-Length", str(len(body)))
        with self.lock:  # before the answer leaves: the client may look right after
            self.codes.append(304 if same else 200)
        h.end_headers()
        h.wfile.write(body)


def cache(**kw: object) -> CRLCache:
    return CRLCache(Fetcher(timeout=2.0), **kw)  # type: ignore[arg-type]


def test_conditional_revalidation_304_keeps_the_crl(pki: PKI, server: TestServer) -> None:
    pub = Publisher(pki)
    server.routes["/c.crl"] = pub
    c = cache()
    url = server.url("/c.crl")
    first = c.get(url, pki.issuer, NOW)
    assert c.get(url, pki.issuer, NOW + timedelta(minutes=4)) is first  # no request
    assert pub.codes == [200]
    again = c.get(url, pki.issuer, NOW + timedelta(minutes=5))
    assert again is first  # 304: the verified CRL is kept, not re-parsed or re-verified
    assert pub.codes == [200, 304]
    assert pub.seen[1] == {"If-None-Match": '"v1"',
                           "If-Modified-Since": format_datetime(pub.this_update, usegmt=True)}
    assert (c.requests, c.downloads, c.not_modified) == (2, 1, 1)
    assert c.bytes == len(pub.body)  # the 304 cost no body


def test_if_modified_since_alone_is_enough(pki: PKI, server: TestServer) -> None:
    pub = Publisher(pki, etag=False)
    server.routes["/lm.crl"] = pub
    c = cache()
    c.get(server.url("/lm.crl"), pki.issuer, NOW)
    c.get(server.url("/lm.crl"), pki.issuer, NOW + timedelta(minutes=5))
    assert pub.codes == [200, 304] and pub.seen[1]["If-None-Match"] is None


def test_changed_crl_seen_at_next_revalidation_though_next_update_days_away(
        pki: PKI, server: TestServer) -> None:
    pub = Publisher(pki)
    server.routes["/r.crl"] = pub
    c = cache()
    url, leaf = server.url("/r.crl"), pki.leaf(serial=777)
    assert c.get(url, pki.issuer, NOW).status(leaf, NOW).status is Status.GOOD
    pub.publish({777: x509.ReasonFlags.key_compromise}, this_update=NOW)  # re-published now
    t = NOW + timedelta(minutes=5)
    crl = c.get(url, pki.issuer, t)
    r = crl.status(leaf, t)
    assert r.status is Status.REVOKED and r.reason == "key_compromise"
    assert crl.next_update == NOW + WEEK and pub.codes == [200, 200]


def test_next_update_sooner_than_revalidate_brings_it_forward(
        pki: PKI, server: TestServer) -> None:
    pub = Publisher(pki)
    pub.publish({}, next_update=NOW + timedelta(minutes=2))
    server.routes["/s.crl"] = pub
    c = cache()
    c.get(server.url("/s.crl"), pki.issuer, NOW)
    c.get(server.url("/s.crl"), pki.issuer, NOW + timedelta(minutes=1))
    assert len(pub.codes) == 1
    c.get(server.url("/s.crl"), pki.issuer, NOW + timedelta(minutes=2))
    assert len(pub.codes) == 2


def test_304_for_an_expired_crl_is_followed_by_a_full_request(
        pki: PKI, server: TestServer) -> None:
    body = make_crl(pki.issuer, pki.issuer_key, {}, next_update=NOW + timedelta(minutes=1))
    fresh = make_crl(pki.issuer, pki.issuer_key, {}, this_update=NOW + timedelta(minutes=9),
                     next_update=NOW + WEEK)
    served: list[tuple[int, str | None]] = []

    def lazy(h: BaseHTTPRequestHandler, _: bytes) -> None:  # always "not modified" if asked
        conditional = h.headers.get("If-None-Match")
        served.append((304 if conditional else 200, conditional))
        out = b"" if conditional else (fresh if served[1:] else body).public_bytes(DER)
        h.send_response(304 if conditional else 200)
        h.send_header("ETag", '"same"')
        h.send_header("Content-Length", str(len(out)))
        h.end_headers()
        h.wfile.write(out)

    server.routes["/x.crl"] = lazy
    c = cache()
    c.get(server.url("/x.crl"), pki.issuer, NOW)
    later = NOW + timedelta(minutes=10)  # the CRL we hold expired (nextUpdate + 5 min skew)
    crl = c.get(server.url("/x.crl"), pki.issuer, later)
    assert served == [(200, None), (304, '"same"'), (200, None)]
    assert crl.next_update == NOW + WEEK and crl.status(pki.leaf(), later).status is Status.GOOD


def test_concurrent_asks_for_one_url_make_one_request(pki: PKI, server: TestServer) -> None:
    route = Route(body=make_crl(pki.issuer, pki.issuer_key, {}).public_bytes(DER), delay=0.3)
    server.routes["/one.crl"] = route
    other = make_ca("Other CA")  # a different issuer for the same URL: still one request
    c = cache()
    url = server.url("/one.crl")
    start = threading.Barrier(24)
    got: list[object] = []

    def ask(issuer: x509.Certificate) -> None:
        start.wait()
        try:
            got.append(c.get(url, issuer, NOW))
        except InvalidRevocationData as e:
            got.append(e)

    threads = [threading.Thread(target=ask, args=(other[0] if i % 8 == 0 else pki.issuer,))
               for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert route.hits == 1 and c.requests == 1 and c.downloads == 1
    good = [g for g in got if not isinstance(g, InvalidRevocationData)]
    assert len(good) == 21 and len({id(g) for g in good}) == 1  # one verified CRL shared
    assert sum(isinstance(g, InvalidRevocationData) for g in got) == 3  # wrong issuer


def test_a_failure_is_remembered_only_briefly(pki: PKI, server: TestServer) -> None:
    route = Route(status=503)
    server.routes["/f.crl"] = route
    c = cache()
    assert c.failure_backoff == timedelta(seconds=10)
    url = server.url("/f.crl")
    with pytest.raises(InvalidRevocationData, match="503"):
        c.get(url, pki.issuer, NOW)
    with pytest.raises(InvalidRevocationData, match="503"):
        c.get(url, pki.issuer, NOW + timedelta(seconds=9))  # the same burst: no new request
    assert route.hits == 1
    server.routes["/f.crl"] = ok = Route(body=make_crl(pki.issuer, pki.issuer_key, {})
                                         .public_bytes(DER))
    assert c.get(url, pki.issuer, NOW + timedelta(seconds=10)).status(
        pki.leaf(), NOW).status is Status.GOOD
    assert ok.hits == 1 and c.failures == 1


def test_a_failed_revalidation_keeps_the_valid_crl_and_retries_soon(
        pki: PKI, server: TestServer) -> None:
    pub = Publisher(pki)
    server.routes["/k.crl"] = pub
    c = cache()
    url = server.url("/k.crl")
    first = c.get(url, pki.issuer, NOW)
    server.routes["/k.crl"] = down = Route(status=500)
    t = NOW + timedelta(minutes=5)
    assert c.get(url, pki.issuer, t) is first  # still within its validity: it answers
    assert c.get(url, pki.issuer, t + timedelta(seconds=5)) is first and down.hits == 1
    c.get(url, pki.issuer, t + timedelta(seconds=10))
    assert down.hits == 2  # retried after 10 s, not after the old minute or the 5 min period
    server.routes["/k.crl"] = pub
    assert c.get(url, pki.issuer, t + timedelta(seconds=20)) is first  # back: 304
    assert pub.codes == [200, 304]


def test_disk_copy_keeps_validators_across_restart(pki: PKI, server: TestServer,
                                                   tmp_path: Path) -> None:
    pub = Publisher(pki)
    server.routes["/d.crl"] = pub
    url = server.url("/d.crl")
    cache(directory=tmp_path).get(url, pki.issuer, NOW)
    restarted = cache(directory=tmp_path)
    restarted.get(url, pki.issuer, NOW + timedelta(minutes=1))  # checked a minute ago: no request
    assert pub.codes == [200]
    restarted.get(url, pki.issuer, NOW + timedelta(minutes=5))
    assert pub.codes == [200, 304] and pub.seen[1]["If-None-Match"] == '"v1"'


def test_revalidation_slack_absorbs_a_clock_a_moment_early(pki: PKI, server: TestServer) -> None:
    """A caller asking every 5 min (the daemon's CRL signal) always revalidates."""
    pub = Publisher(pki)
    server.routes["/t.crl"] = pub
    c = cache()
    url = server.url("/t.crl")
    t = NOW
    for _ in range(4):
        c.get(url, pki.issuer, t)
        t += timedelta(minutes=5) - timedelta(milliseconds=5)
    assert pub.codes == [200, 304, 304, 304]
    c.get(url, pki.issuer, t - timedelta(minutes=1))
    assert len(pub.codes) == 4


def test_overdue_crl_is_revalidated_at_every_later_ask(pki: PKI, server: TestServer) -> None:
    pub = Publisher(pki)
    pub.publish({}, next_update=NOW - timedelta(minutes=1))  # overdue, within the 5 min skew
    server.routes["/o.crl"] = pub
    c = cache()
    crl = c.get(server.url("/o.crl"), pki.issuer, NOW)
    assert crl.status(pki.leaf(), NOW).status is Status.GOOD
    c.get(server.url("/o.crl"), pki.issuer, NOW + timedelta(seconds=1))
    assert pub.codes == [200, 304]
