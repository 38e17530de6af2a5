"""The CA's ACME directory is looked up once per CA, whatever the answer: a fleet of
certificates from a CA without ARI (or unreachable) must not cost one fetch each."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler

from certfailover.checks import CertMaterial, CheckContext
from certfailover.revocation import CASources, RevocationCheck, RevocationConfig
from certfailover.testing import pki
from certfailover_lab.httpd import quiet, serving
from certfailover_lab.ports import free_port

NOW = datetime.now(UTC)


def _materials(n: int) -> list[CertMaterial]:
    root = pki.make_root("R")
    inter = pki.make_intermediate(root, "I")
    out = []
    for i in range(n):
        leaf, _ = pki.make_leaf(inter, [f"w{i}.example.test"])
        out.append(pki.material(leaf, [inter.cert], site=f"s{i}", ca="ca"))
    return out


def _ctx() -> CheckContext:
    return CheckContext(now=NOW, domains=("x",), trust=())


def test_a_directory_without_renewal_info_is_fetched_once() -> None:
    hits: list[str] = []

    class Directory(BaseHTTPRequestHandler):
        log_message = quiet

        def do_GET(self) -> None:
            hits.append(self.path)
            body = json.dumps({"newOrder": "http://x/new-order"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Directory) as srv:
        url = f"http://127.0.0.1:{srv.server_address[1]}/dir"
        check = RevocationCheck(RevocationConfig(cas={"ca": CASources(directory_url=url)}))
        for m in _materials(5):
            assert [f for f in check.run(m, _ctx()) if f.check == "ari"] == []
        assert hits == ["/dir"]


def test_an_unreachable_directory_is_not_retried_per_certificate() -> None:
    port = free_port()  # nothing listens here
    check = RevocationCheck(RevocationConfig(cas={"ca": CASources(
        directory_url=f"http://127.0.0.1:{port}/dir")}))
    calls = {"n": 0}
    real = check.fetcher.fetch

    def counting(*a: object, **kw: object) -> object:
        calls["n"] += 1
        return real(*a, **kw)  # type: ignore[arg-type]

    check.fetcher.fetch = counting  # type: ignore[method-assign]
    for m in _materials(4):
        ari = [f for f in check.run(m, _ctx()) if f.check == "ari"]
        assert ari and ari[0].severity.value == "warn" and not ari[0].replace and not ari[0].known
    assert calls["n"] == 1
