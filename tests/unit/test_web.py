"""The status page over a real store (SQLite + vault with trustme certificates) and a real HTTP
server on loopback: escaping, sorting, filters, the status JSON, the site page, auth, 404s."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509

from certfailover import config as config_mod
from certfailover.model import Cert, CertState, Event, Finding, Severity, to_jsonable
from certfailover.store.db import Database
from certfailover.store.vault import Vault
from certfailover.tables import Secret
from certfailover.web.pages import Pages
from certfailover.web.server import COOKIE, App, WebServer
from certfailover.web.settings import WebSettings
from certfailover.web.source import status_document
from certfailover.web.timeline import timeline
from certfailover.web.view import filter_rows, overview_rows

NOW = datetime.now(UTC).replace(microsecond=0)
HOSTILE = "<script>alert('x')</script>&\"'"
TOKEN = "s3cret-token-0123456789"


@dataclass
class Store:
    config: config_mod.Config
    db: Database
    vault: Vault
    path: Path


def _cert(vault: Vault, db: Database, ca: trustme.CA, site: str, ca_name: str, domain: str,
          state: CertState, *, days: float, age: float = 10) -> Cert:
    issued = ca.issue_cert(domain, not_before=NOW - timedelta(days=age),
                           not_after=NOW + timedelta(days=days))
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    serial = format(leaf.serial_number, "x")
    path = vault.save(site, ca_name, serial, leaf_pem=issued.cert_chain_pems[0].bytes(),
                      chain_pem=b"".join(p.bytes() for p in issued.cert_chain_pems[1:]),
                      key_pem=issued.private_key_pem.bytes())
    from cryptography.hazmat.primitives import hashes
    c = Cert(f"{site}/{ca_name}/{serial}", site, ca_name, serial, leaf.not_valid_before_utc,
             leaf.not_valid_after_utc, leaf.fingerprint(hashes.SHA256()).hex(), "ec-p256",
             leaf.issuer.rfc4514_string(), state, NOW - timedelta(days=age), str(path))
    db.add_cert(c)
    return c


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Three sites: `calm` (ok on a, healthy standby b), `shaky` (active on b with a warning,
    standby a fails; both reasons end in hostile HTML), `down` (only a failing active on a)."""
    ca_a, ca_b = trustme.CA(organization_name="Alpha CA"), trustme.CA(organization_name="Beta CA")
    bundle = tmp_path / "clients.pem"
    bundle.write_bytes(ca_a.cert_pem.bytes() + ca_b.cert_pem.bytes())
    lines = ["[store]", f"directory = {json.dumps(str(tmp_path / 'store'))}"]
    for ca in ("a", "b"):
        lines += ["[[ca]]", f'name = "{ca}"', f'directory = "https://127.0.0.1:9/{ca}/dir"']
    for name in ("calm", "shaky", "down"):
        lines += ["[[site]]", f'name = "{name}"', f'domains = ["{name}.example.test"]',
                  'cas = ["a", "b"]', f"trust = [{json.dumps(str(bundle))}]"]
    path = tmp_path / "certfailover.toml"
    path.write_text("\n".join(lines) + "\n")
    cfg = config_mod.load(path, env={})
    vault = Vault(cfg.store)
    vault.ensure()
    db = Database(cfg.database)
    db.migrate()
    ok = [Finding("validity", Severity.OK, "valid")]
    calm_a = _cert(vault, db, ca_a, "calm", "a", "calm.example.test", CertState.ACTIVE, days=80)
    calm_b = _cert(vault, db, ca_b, "calm", "b", "calm.example.test", CertState.STANDBY, days=85)
    shaky_b = _cert(vault, db, ca_b, "shaky", "b", "shaky.example.test", CertState.ACTIVE, days=20)
    shaky_a = _cert(vault, db, ca_a, "shaky", "a", "shaky.example.test", CertState.STANDBY, days=60)
    down_a = _cert(vault, db, ca_a, "down", "a", "down.example.test", CertState.ACTIVE, days=5)
    for c in (calm_a, calm_b):
        db.save_findings(c.id, NOW, ok)
    db.save_findings(shaky_b.id, NOW, [Finding("ocsp", Severity.WARN, HOSTILE)])
    db.save_findings(shaky_a.id, NOW, [Finding("crl", Severity.FAIL,
                                                 "revoked (keyCompromise) " + HOSTILE)])
    db.save_findings(down_a.id, NOW, [Finding("names", Severity.FAIL, "does not cover the name")])
    db.add_events([
        Event(NOW - timedelta(days=9), "shaky", "activated", "activated to " + shaky_a.id,
              {"cert": shaky_a.id}),
        Event(NOW - timedelta(days=2), "shaky", "failover", f"failed over to {shaky_b.id}: "
              + HOSTILE, {"cert": shaky_b.id, "previous": shaky_a.id}),
    ])
    return Store(cfg, db, vault, path)


@pytest.fixture
def serve(store: Store) -> Iterator[Any]:
    started: list[WebServer] = []

    def start(settings: WebSettings | None = None) -> WebServer:
        s = settings or WebSettings(("127.0.0.1", 0))
        srv = WebServer.start(App(s, store.config, store.db, store.vault))
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def get(srv: WebServer, path: str, headers: dict[str, str] | None = None,
        method: str = "GET", body: str | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def _rows_in_order(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('<tr data-site="')[1:]]


def test_overview_sorted_by_risk_and_escaped(serve: Any) -> None:
    srv = serve()
    status, headers, html = get(srv, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert _rows_in_order(html) == ["down", "shaky", "calm"]  # fail, warn, ok
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&#34;&#39;" in html
    assert "script-src 'self'" in headers["content-security-policy"]
    # live updates: one same-origin script polling the status JSON; none inline
    assert '<script src="/static/live.js" defer></script>' in html and html.count("<script") == 1
    status, headers, js = get(srv, "/static/live.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert 'fetch("/status.json"' in js
    # the row of shaky: active CA b, a standby from a that is not healthy, worst finding
    shaky = html.split('<tr data-site="shaky"')[1].split("</tr>")[0]
    assert '<td class="active-ca">b</td>' in shaky and "0/1 healthy" in shaky
    assert "fail</span> a crl: revoked (keyCompromise)" in shaky


def test_filters_by_ca_and_state_work_without_js(serve: Any) -> None:
    srv = serve()
    assert _rows_in_order(get(srv, "/?ca=a")[2]) == ["down", "calm"]
    assert _rows_in_order(get(srv, "/?ca=b")[2]) == ["shaky"]
    assert _rows_in_order(get(srv, "/?state=ok")[2]) == ["calm"]
    assert _rows_in_order(get(srv, "/?ca=a&state=fail")[2]) == ["down"]
    html = get(srv, "/?ca=nobody")[2]
    assert _rows_in_order(html) == [] and "No site matches." in html
    # the form itself: labelled selects, the current choice kept
    html = get(srv, "/?ca=b")[2]
    assert '<label for="f-ca">' in html and '<option value="b" selected>' in html


def test_status_json_is_what_status_json_prints(serve: Any, store: Store) -> None:
    srv = serve()
    status, headers, body = get(srv, "/status.json")
    assert status == 200 and headers["content-type"] == "application/json"
    doc = json.loads(body)
    cli = subprocess.run([sys.executable, "-m", "certfailover.cli.main", "--config",
                          str(store.path), "--json", "status"], check=False, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    want = json.loads(cli.stdout)

    def strip(d: dict[str, Any]) -> list[Any]:  # days_left moves with the clock
        return [{**s, "certs": [{k: v for k, v in c.items() if k != "days_left"}
                                for c in s["certs"]]} for s in d["sites"]]
    assert strip(doc) == strip(want)


def test_site_page_shows_certs_findings_chain_pins_events_and_timeline(
        serve: Any, store: Store) -> None:
    srv = serve()
    status, _, html = get(srv, "/site/shaky")
    assert status == 200
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    certs = store.db.certs("shaky")
    for c in certs:
        assert c.serial in html
    assert "revoked (keyCompromise)" in html and html.count('class="cert ') == 2
    assert "Alpha CA" in html and "Beta CA" in html  # the chains' issuers
    from certfailover.pins import spki_pin
    leaf = store.vault.load(Path(certs[0].path)).leaf
    assert spki_pin(leaf.public_key()) in html
    assert '<tr class="ev-failover">' in html and '<tr class="ev-activated">' in html
    svg = html.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert svg.count('<g class="bar ') == 2 and svg.count('<g class="switch ') == 2
    assert "<script" not in svg


def test_site_page_shows_every_stored_chain_with_its_verdict(serve: Any, store: Store) -> None:
    """A certificate with two chains (docs/chains.md): both are shown, each with the verdict of
    status' chain judge, and the choice's reason."""
    calm_a = next(c for c in store.db.certs("calm") if c.ca == "a")
    root = store.vault.load(Path(calm_a.path)).leaf.issuer.rfc4514_string()
    bundle = next(t for t in store.config.site("calm").trust).path.read_bytes()
    alpha_root = next(p for p in pem_blocks(bundle) if b"Alpha" in
                      x509.load_pem_x509_certificate(p).subject.rfc4514_string().encode())
    store.vault.add_chain(Path(calm_a.path), alpha_root)  # chain 1: the root sent along
    status, _, html = get(serve(), "/site/calm")
    assert status == 200
    section = next(part for part in html.split('class="cert ')[1:] if calm_a.serial in part)
    _, _, doc = get(serve(), "/status.json")
    row = next(c for site in json.loads(doc)["sites"] if site["site"] == "calm"
               for c in site["certs"] if c["id"] == calm_a.id)
    assert [p["index"] for p in row["chains"]["paths"]] == [0, 1]
    for p in row["chains"]["paths"]:  # the page says what status' chain judge says
        assert f"Chain {p['index']}: {'ok' if p['ok'] else 'fails'}" in section, section
    assert 'class="chain-reason"' in section
    assert section.count(root) >= 2, "each chain lists the leaf's issuer"


def pem_blocks(data: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [block + end + b"\n" for block in data.split(end) if b"BEGIN" in block]


def test_a_client_that_sends_nothing_is_let_go(serve: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle connection (or a body shorter than its Content-Length) holds a server thread
    only until the handler's timeout: then the server closes it."""
    import socket
    import time

    from certfailover.web import server as web_server
    monkeypatch.setattr(web_server._Handler, "timeout", 0.5)
    srv = serve()
    with socket.create_connection((srv.host, srv.port), timeout=10) as sock:
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nx")
        t0 = time.monotonic()
        rest = sock.recv(4096)
        while rest and b"HTTP/1.1" not in rest:
            rest = sock.recv(4096)
        assert time.monotonic() - t0 < 5, "closed after the handler's timeout"


def test_404s(serve: Any) -> None:
    srv = serve()
    assert get(srv, "/site/nope")[0] == 404
    assert get(srv, "/site/%3Cscript%3E")[0] == 404
    status, _, html = get(srv, "/etc/passwd")
    assert status == 404 and "Nothing at /etc/passwd" in html
    assert get(srv, "/static/../server.py")[0] == 404
    assert get(srv, "/", method="POST", body="")[0] == 405


def test_token_required_and_checked(serve: Any) -> None:
    srv = serve(WebSettings(("127.0.0.1", 0), token=Secret(TOKEN, "env:T")))
    status, headers, html = get(srv, "/")
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert '<label for="token">' in html and 'data-site="' not in html
    assert get(srv, "/status.json")[0] == 401
    assert get(srv, "/site/calm")[0] == 401
    assert get(srv, "/", {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
    assert get(srv, "/", {"Cookie": f"{COOKIE}=wrong"})[0] == 401
    assert get(srv, "/", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert get(srv, "/status.json", {"Authorization": f"bearer {TOKEN}"})[0] == 200
    # the sign-in form sets the cookie the browser sends next
    bad = get(srv, "/login", {"Content-Type": "application/x-www-form-urlencoded"}, "POST",
              "token=nope")
    assert bad[0] == 401 and "Wrong token." in bad[2]
    status, headers, _ = get(srv, "/login", {"Content-Type": "application/x-www-form-urlencoded"},
                             "POST", f"token={TOKEN}")
    assert status == 303 and "HttpOnly" in headers["set-cookie"]
    assert "SameSite=Strict" in headers["set-cookie"]
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert get(srv, "/", {"Cookie": cookie})[0] == 200


def test_proxy_header(serve: Any) -> None:
    srv = serve(WebSettings(("127.0.0.1", 0), proxy_header="X-Forwarded-User"))
    assert get(srv, "/")[0] == 401
    assert get(srv, "/", {"X-Forwarded-User": " "})[0] == 401
    assert get(srv, "/", {"X-Forwarded-User": "alice"})[0] == 200


def test_without_auth_only_loopback_host_names(serve: Any) -> None:
    srv = serve()
    assert get(srv, "/", {"Host": "attacker.example:8786"})[0] == 421  # DNS rebinding
    assert get(srv, "/", {"Host": "localhost:8786"})[0] == 200
    assert get(srv, "/", {"Host": "[::1]:8786"})[0] == 200


def _doc(sites: list[dict[str, Any]]) -> dict[str, Any]:
    return {"time": NOW.isoformat(), "sites": sites}


def _site(name: str, health: str, days: float, standbys: int = 1, **extra: Any) -> dict[str, Any]:
    nb, na = NOW - timedelta(days=10), NOW + timedelta(days=days)
    return {"site": name, "domains": [f"{name}.test"], "active": f"{name}/a/1",
            "min_standbys": 1, "standbys_healthy": standbys, "notes": [],
            "certs": [{"id": f"{name}/a/1", "ca": extra.get("ca", "a"), "serial": "1",
                       "state": "active", "not_before": nb.isoformat(), "not_after": na.isoformat(),
                       "days_left": days, "health": health, "findings": extra.get("findings", []),
                       "trust": {}, "independence": []}]}


def test_sorting_within_a_state_by_next_dated_risk() -> None:
    doc = _doc([_site("late", "ok", 80), _site("soon", "ok", 12), _site("bad", "fail", 90),
                _site("lonely", "ok", 90, standbys=0)])
    rows = overview_rows(doc)
    assert [r.site for r in rows] == ["bad", "lonely", "soon", "late"]
    late = rows[3]
    # renewal point first: 90 days of life, the last third -> 30 days before expiry
    assert late.next_risk is not None and late.next_risk.what == "renewal point (a)"
    assert abs((late.next_risk.when - (NOW + timedelta(days=50))).total_seconds()) < 1
    assert [r.site for r in filter_rows(rows, state="warn")] == ["lonely"]


def test_forecast_is_the_next_risk_when_sooner() -> None:
    cut = (NOW + timedelta(days=3)).isoformat()
    f = {"check": "trust", "severity": "warn", "reason": "chrome forecast", "detail": {},
         "program": "chrome", "forecast": cut}
    row = overview_rows(_doc([_site("s", "warn", 80, findings=[f])]))[0]
    assert row.next_risk is not None and row.next_risk.what == "chrome cut-off (a)"


def test_hostile_site_name_in_a_document_is_escaped() -> None:
    html = Pages().overview(_doc([_site(HOSTILE, "ok", 50, ca=HOSTILE)]))
    assert "<script>" not in html
    assert 'href="/site/%3Cscript%3Ealert' in html


def test_timeline_geometry() -> None:
    st = _site("s", "ok", 20)
    events = [{"time": (NOW - timedelta(days=5)).isoformat(), "kind": "failover",
               "message": "m"}, {"time": NOW.isoformat(), "kind": "issued", "message": "i"}]
    tl = timeline(st["certs"], events, NOW)
    (bar,) = tl.bars
    assert bar.x0 == tl.left and bar.x1 == pytest.approx(tl.width - 50)
    (renewal,) = [m for m in bar.marks if m.kind == "renewal"]
    assert bar.x0 < renewal.x < bar.x1
    (sw,) = tl.switches  # issuance is no switch
    assert tl.now is not None and bar.x0 < sw.x < tl.now.x


def test_status_document_matches_to_jsonable_of_site_status(store: Store) -> None:
    from certfailover.status import site_status
    doc = status_document(store.db, store.vault, store.config, NOW)
    assert doc["sites"] == [to_jsonable(site_status(store.db, s, NOW, vault=store.vault,
                                                    daemon=store.config.daemon))
                            for s in store.config.sites]


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "certfailover.cli.main", "--config", str(cfg),
                           *args], check=False, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_run_refuses_a_non_loopback_web_address_without_auth(store: Store) -> None:
    r = _cli(store.path, "run", "--web", "0.0.0.0:8786")
    assert r.returncode != 0
    assert f"{store.path}: --web: the status page would listen on 0.0.0.0:8786, which is not " \
           "a loopback address, without authentication" in r.stderr
    assert "Traceback" not in r.stderr
    # the same in the [web] table: refused when the file is loaded, by any command
    store.path.write_text(store.path.read_text() + '\n[web]\nlisten = "[::]:8786"\n')
    r = _cli(store.path, "status")
    assert r.returncode != 0 and "[web].listen: the status page would listen on ::" in r.stderr
