"""ARI `replaces` in newOrder, observed on the wire through a fake ACME transport.

Pebble 2.4 has no renewalInfo, so the integration tests can only show that `replaces` is left
out there; this fake CA (a requests transport adapter, no sockets) advertises renewalInfo.
"""

from __future__ import annotations

import base64
import itertools
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from acme import client as acme_client
from josepy.jwa import JWASignature
from josepy.jwk import JWK
from requests.adapters import BaseAdapter

from certfailover import keys
from certfailover.errors import IssuanceError
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import WebrootSolver
from certfailover.model import utcnow

BASE = "https://fake-ca.test"
Problem = tuple[int, str]  # HTTP status, ACME error code


def _b64d(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class FakeCA(BaseAdapter):
    """Answers directory, nonce, newAccount; newOrder records the payload and answers `script`."""

    def __init__(self, *, ari: bool, script: list[Problem]) -> None:
        super().__init__()
        self.ari = ari
        self.script = list(script)
        self.orders: list[dict[str, Any]] = []
        self._nonces = (f"bm9uY2U{i}" for i in itertools.count())

    def _resp(
        self, req: requests.PreparedRequest, status: int, body: Any = None, **headers: str
    ) -> requests.Response:
        resp = requests.Response()
        resp.status_code = status
        resp.url = req.url or ""
        resp.request = req
        resp.headers.update({"Replay-Nonce": next(self._nonces), **headers})
        if body is not None:
            resp._content = json.dumps(body).encode()
            if "Content-Type" not in headers:
                resp.headers["Content-Type"] = "application/json"
        else:
            resp._content = b""
        return resp

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        url = request.url or ""
        if url == f"{BASE}/dir":
            directory = {
                "newNonce": f"{BASE}/nonce",
                "newAccount": f"{BASE}/acct",
                "newOrder": f"{BASE}/order",
                "revokeCert": f"{BASE}/revoke",
                "keyChange": f"{BASE}/key-change",
                "meta": {},
            }
            if self.ari:
                directory["renewalInfo"] = f"{BASE}/ari"
            return self._resp(request, 200, directory)
        if url == f"{BASE}/nonce":
            return self._resp(request, 200)
        body = request.body
        jws = json.loads(body if isinstance(body, (bytes, str)) else b"{}")
        payload = json.loads(_b64d(jws["payload"])) if jws.get("payload") else None
        if url == f"{BASE}/acct":
            return self._resp(request, 201, {"status": "valid"}, Location=f"{BASE}/acct/1")
        if url == f"{BASE}/order":
            assert isinstance(payload, dict)
            self.orders.append(payload)
            status, code = self.script.pop(0)
            problem = {"type": f"urn:ietf:params:acme:error:{code}", "detail": f"fake {code}"}
            return self._resp(
                request, status, problem, **{"Content-Type": "application/problem+json"}
            )
        return self._resp(request, 404, {"type": "about:blank", "detail": url})

    def close(self) -> None:
        pass


class FakedIssuer(AcmeIssuer):
    fake: FakeCA

    def _make_network(self, jwk: JWK, alg: JWASignature) -> acme_client.ClientNetwork:
        net = super()._make_network(jwk, alg)
        net.session.mount(BASE, self.fake)
        return net


def _run(tmp_path: Path, fake: FakeCA, replaces: str | None) -> IssuanceError:
    issuer = FakedIssuer(
        "fake",
        f"{BASE}/dir",
        email=None,
        account_key_path=tmp_path / "acct.pem",
        solver=WebrootSolver(tmp_path / "www"),
    )
    issuer.fake = fake
    csr = keys.csr_pem(keys.generate("ec-p256"), ["www.example.test"])
    with pytest.raises(IssuanceError) as info:
        issuer.issue(csr, deadline=utcnow() + timedelta(seconds=5), replaces=replaces)
    return info.value


REJECT: Problem = (400, "rejectedIdentifier")
CertId = "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_replaces_sent_when_the_ca_offers_renewal_info(tmp_path: Path) -> None:
    fake = FakeCA(ari=True, script=[REJECT])
    err = _run(tmp_path, fake, CertId)
    assert fake.orders == [
        {"identifiers": [{"type": "dns", "value": "www.example.test"}], "replaces": CertId}
    ]
    assert str(err).startswith(f"fake: {BASE}/order: urn:ietf:params:acme:error:rejectedIdentifier")


@pytest.mark.parametrize(
    ("ari", "replaces"), [(False, CertId), (True, None)], ids=["ca-without-ari", "not-given"]
)
def test_replaces_left_out(tmp_path: Path, ari: bool, replaces: str | None) -> None:
    fake = FakeCA(ari=ari, script=[REJECT])
    _run(tmp_path, fake, replaces)
    assert len(fake.orders) == 1 and "replaces" not in fake.orders[0]


@pytest.mark.parametrize("status", [409, 400])
def test_already_replaced_retries_without_replaces(tmp_path: Path, status: int) -> None:
    # RFC 9773 answers alreadyReplaced with 409 Conflict (acme turns any 409 into ConflictError)
    fake = FakeCA(ari=True, script=[(status, "alreadyReplaced"), REJECT])
    err = _run(tmp_path, fake, CertId)
    assert [o.get("replaces") for o in fake.orders] == [CertId, None]
    assert "rejectedIdentifier" in str(err)
