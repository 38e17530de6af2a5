"""The CT watch against the lab log on loopback: unexpected certificates and precertificates
for a site's names become events within one poll, certfailover's own do not, the position
is kept in the store, and a log that rewrites its history or lies about its entries is
reported and not trusted."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfailover.ct import loglist, positions
from certfailover.ct.match import NameIndex
from certfailover.ct.settings import CTSettings
from certfailover.ct.watch import Watch
from certfailover.events import EventKind
from certfailover.model import Cert, CertState
from certfailover.store.db import Database
from certfailover.testing import pki
from certfailover_lab.ctlog import CTLog, make_precert

NOW = datetime.now(UTC)
SITES = {"shop": ("shop.example.test", "www.shop.example.test"), "blog": ("blog.example.test",)}


def _pair(issuer: pki.Authority, names: list[str]) -> tuple[x509.Certificate, x509.Certificate]:
    """A precertificate and the certificate issued from it (same TBS but the poison)."""
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()

    def build(poison: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
             .issuer_name(issuer.cert.subject).public_key(key.public_key()).serial_number(serial)
             .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=30))
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False))
        if poison:
            b = b.add_extension(x509.PrecertPoison(), critical=True)
        return b.sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]
    return build(True), build(False)


class Lab:
    def __init__(self, tmp: Path, log: CTLog) -> None:
        self.tmp, self.log = tmp, log
        self.db = Database(f"sqlite:///{tmp / 'state.db'}")
        self.db.migrate()
        self.root = pki.make_root("Lab Root")
        self.ours = pki.make_intermediate(self.root, "Our CA")
        self.rogue = pki.make_intermediate(pki.make_root("Third Root"), "Third CA")  # a third CA
        self.events: list[tuple[str, EventKind, str, dict[str, Any]]] = []

    def keep(self, cert: x509.Certificate, site: str = "shop") -> None:
        """Store `cert` as one certfailover obtained."""
        d = self.tmp / "archive" / format(cert.serial_number, "x")
        d.mkdir(parents=True)
        (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        serial = format(cert.serial_number, "x")
        self.db.add_cert(Cert(
            id=f"{site}/a/{serial}", site=site, ca="a", serial=serial,
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
            key_type="ec-p256", issuer_dn=cert.issuer.rfc4514_string(), state=CertState.STANDBY,
            created=NOW, path=str(d)))

    def watch(self, *, start: str = "beginning", subdomains: tuple[str, ...] = (),
              logs: list[loglist.LogInfo] | None = None,
              distrust: tuple[str, ...] = ()) -> Watch:
        settings = CTSettings(log_list="unused", timeout=5, batch=7, start=start,
                              subdomains=subdomains, distrust_on_unexpected=distrust)
        return Watch(settings, self.db, SITES, logs=logs or loglist.parse(self.log.log_list(), "lab"),
                     record=lambda *ev: self.events.append(ev),
                     site_cas={"shop": ("a", "b"), "blog": ("a", "b")})

    def kinds(self) -> list[str]:
        return [str(e[1]) for e in self.events]


@pytest.fixture
def lab(tmp_path: Path) -> Any:
    with CTLog() as log:
        yield Lab(tmp_path, log)


def test_a_third_cas_certificate_is_an_event_within_one_poll(lab: Lab) -> None:
    ours, _ = pki.make_leaf(lab.ours, ["shop.example.test", "www.shop.example.test"])
    lab.keep(ours)
    pre, final = _pair(lab.ours, ["blog.example.test"])
    lab.keep(final, "blog")
    for i in range(20):
        filler, _ = pki.make_leaf(lab.ours, [f"n{i}.example.org"])
        lab.log.add_chain([filler, lab.ours.cert])
    lab.log.add_chain([ours, lab.ours.cert])
    lab.log.add_pre_chain([pre, lab.ours.cert])  # our own precertificate: not unexpected
    lab.log.add_chain([final, lab.ours.cert])
    w = lab.watch()
    (res,) = w.poll()
    assert (res.from_size, res.to_size, res.entries, res.matched) == (0, 23, 23, 3)
    assert res.problem == "" and lab.events == []

    rogue, _ = pki.make_leaf(lab.rogue, ["www.shop.example.test"])
    lab.log.add_chain([rogue, lab.rogue.cert])
    rogue_pre = make_precert(lab.rogue.cert, lab.rogue.key, ["blog.example.test"])  # type: ignore[arg-type]
    lab.log.add_pre_chain([rogue_pre, lab.rogue.cert])
    (res,) = w.poll()
    assert (res.from_size, res.to_size, res.entries) == (23, 25, 2)
    assert lab.kinds() == ["unexpected_certificate"] * 2
    by_site = {e[0]: e for e in lab.events}
    shop = by_site["shop"][3]
    assert shop["serial"] == format(rogue.serial_number, "x") and "Third CA" in shop["issuer"]
    assert shop["names"] == ["www.shop.example.test"] and shop["index"] == 23
    assert shop["log"] == lab.log.url and not shop["precert"]
    blog = by_site["blog"][3]
    assert blog["precert"] and blog["serial"] == format(rogue_pre.serial_number, "x")

    pos = positions.load(lab.db, base64.b64encode(lab.log.log_id).decode())
    assert pos is not None and pos.tree_size == 25 and pos.problem == ""
    assert pos.root == base64.b64decode(lab.log.sth()["sha256_root_hash"])
    # a new Watch (a restarted daemon) goes on from the stored position
    (res,) = lab.watch().poll()
    assert (res.from_size, res.entries) == (25, 0) and len(lab.events) == 2


def test_distrust_on_unexpected_distrusts_the_issuing_ca_for_that_site_only(lab: Lab) -> None:
    """`shop` opted in: an unexpected certificate (or precertificate) from the issuer of its CA
    a's certificates distrusts a for shop; `blog` did not opt in; a third CA's certificate names
    none of the site's CAs, so it is an alert and nothing is distrusted."""
    ours, _ = pki.make_leaf(lab.ours, ["shop.example.test"])
    lab.keep(ours)
    w = lab.watch(distrust=("shop",))
    rogue, _ = pki.make_leaf(lab.rogue, ["shop.example.test"])
    lab.log.add_chain([rogue, lab.rogue.cert])
    mis_blog, _ = pki.make_leaf(lab.ours, ["blog.example.test"])
    lab.log.add_chain([mis_blog, lab.ours.cert])
    (res,) = w.poll()
    assert len(res.unexpected) == 2 and res.distrusted == []
    assert lab.db.distrusted("shop") == {} and lab.db.distrusted("blog") == {}

    mis_shop = make_precert(lab.ours.cert, lab.ours.key, ["shop.example.test"])  # type: ignore[arg-type]
    lab.log.add_pre_chain([mis_shop, lab.ours.cert])
    (res,) = w.poll()
    assert res.distrusted == [("shop", "a")]
    assert set(lab.db.site_distrust()) == {"shop"} and lab.db.distrusted() == {}
    assert "for site shop only" in lab.db.distrusted("shop")["a"]
    (ev,) = [e for e in lab.events if e[1] is EventKind.DISTRUST]
    assert ev[0] == "shop" and ev[3]["ca"] == "a" and ev[3]["only_site"]
    assert ev[3]["serial"] == format(mis_shop.serial_number, "x")

    # an order of the site's own at that CA, recent: its certificate may be logged before it is
    # stored (or was discarded late); an alert, never a distrust that would fail over and
    # order again
    lab.db.undistrust("a", site="shop")
    lab.db.start_order("shop", "a", NOW)
    again = make_precert(lab.ours.cert, lab.ours.key, ["shop.example.test"])  # type: ignore[arg-type]
    lab.log.add_pre_chain([again, lab.ours.cert])
    (res,) = w.poll()
    assert len(res.unexpected) == 1 and res.distrusted == []
    assert lab.db.site_distrust() == {}


def test_wildcards_and_asked_for_subdomains(lab: Lab) -> None:
    wild, _ = pki.make_leaf(lab.rogue, ["*.example.test"])  # covers shop. and blog.
    sub, _ = pki.make_leaf(lab.rogue, ["api.shop.example.test"])
    other, _ = pki.make_leaf(lab.rogue, ["shop.example.test.evil.org"])
    for c in (wild, sub, other):
        lab.log.add_chain([c, lab.rogue.cert])
    lab.watch(subdomains=("shop",)).poll()
    got = sorted((e[0], e[3]["index"]) for e in lab.events)
    assert got == [("blog", 0), ("shop", 0), ("shop", 1)]


def test_a_log_that_rewrites_its_history_is_reported_and_not_trusted(lab: Lab) -> None:
    for i in range(9):
        c, _ = pki.make_leaf(lab.ours, [f"n{i}.example.org"])
        lab.log.add_chain([c, lab.ours.cert])
    w = lab.watch()
    w.poll()
    log_id = base64.b64encode(lab.log.log_id).decode()
    before = positions.load(lab.db, log_id)
    assert before is not None and before.tree_size == 9
    # the log replaces entry 4 (a certificate for the site it wants to hide later) and grows
    rogue, _ = pki.make_leaf(lab.rogue, ["shop.example.test"])
    lab.log.rewrite(4, [rogue, lab.rogue.cert])
    c, _ = pki.make_leaf(lab.ours, ["more.example.org"])
    lab.log.add_chain([c, lab.ours.cert])
    (res,) = w.poll()
    assert res.inconsistent and "consistency proof fails" in res.problem
    assert lab.kinds() == ["ct_log_inconsistent"]
    after = positions.load(lab.db, log_id)
    assert after is not None and (after.tree_size, after.root) == (9, before.root)
    assert after.problem == res.problem
    # the same fork at the next poll is not alerted again; the position still does not move
    (res,) = w.poll()
    assert res.inconsistent and lab.kinds() == ["ct_log_inconsistent"]


def test_same_size_different_root_is_a_fork(lab: Lab) -> None:
    for i in range(4):
        c, _ = pki.make_leaf(lab.ours, [f"n{i}.example.org"])
        lab.log.add_chain([c, lab.ours.cert])
    w = lab.watch()
    w.poll()
    c, _ = pki.make_leaf(lab.ours, ["x.example.org"])
    lab.log.rewrite(0, [c, lab.ours.cert])
    (res,) = w.poll()
    assert res.inconsistent and "two different roots for size 4" in res.problem


class LyingLog(CTLog):
    """Signs the true tree but serves another certificate at index 1."""

    def __init__(self, fake: bytes) -> None:
        super().__init__()
        self.fake = fake

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, Any]:
        status, data = super().handle(method, path, query, body)
        if path.endswith("get-entries") and status == 200 and int(query["start"][0]) <= 1:
            data["entries"][1 - int(query["start"][0])]["leaf_input"] = self.fake
        return status, data


def test_entries_that_do_not_hash_to_the_signed_root_are_not_trusted(tmp_path: Path) -> None:
    with LyingLog(b"") as log:
        lab = Lab(tmp_path, log)
        hidden, _ = pki.make_leaf(lab.rogue, ["shop.example.test"])
        decoy, _ = pki.make_leaf(lab.ours, ["decoy.example.org"])
        innocent, _ = pki.make_leaf(lab.ours, ["a.example.org"])
        log.add_chain([innocent, lab.ours.cert])
        log.add_chain([hidden, lab.rogue.cert])
        other = CTLog()
        other.add_chain([decoy])
        log.fake = base64.b64encode(other._entries[0][0]).decode()  # type: ignore[assignment]
        (res,) = lab.watch().poll()
    assert res.inconsistent and "do not hash to its signed root" in res.problem
    assert lab.kinds() == ["ct_log_inconsistent"]
    assert positions.load(lab.db, base64.b64encode(log.log_id).decode()) is None


def test_a_tree_head_signed_by_another_key_is_refused(lab: Lab) -> None:
    c, _ = pki.make_leaf(lab.ours, ["shop.example.test"])
    lab.log.add_chain([c, lab.ours.cert])
    impostor = CTLog()  # same URL, another key in the log list
    listed = lab.log.log_list()
    entry = listed["operators"][0]["logs"][0]
    entry["key"] = base64.b64encode(impostor.key_der).decode()
    entry["log_id"] = base64.b64encode(impostor.log_id).decode()
    (res,) = lab.watch(logs=loglist.parse(listed, "lab")).poll()
    assert "signature does not verify" in res.problem and res.to_size == 0
    assert lab.events == []


def test_start_at_end_skips_history_then_sees_new_entries(lab: Lab) -> None:
    old, _ = pki.make_leaf(lab.rogue, ["shop.example.test"])
    lab.log.add_chain([old, lab.rogue.cert])
    for i in range(12):
        c, _ = pki.make_leaf(lab.ours, [f"n{i}.example.org"])
        lab.log.add_chain([c, lab.ours.cert])
    w = lab.watch(start="end")
    (res,) = w.poll()
    assert (res.from_size, res.to_size, res.entries) == (13, 13, 0) and not res.problem
    new, _ = pki.make_leaf(lab.rogue, ["blog.example.test"])
    lab.log.add_chain([new, lab.rogue.cert])
    (res,) = w.poll()
    assert res.entries == 1 and [(e[0], e[3]["index"]) for e in lab.events] == [("blog", 13)]


def test_name_index() -> None:
    idx = NameIndex({"a": ("a.example.com",), "w": ("*.w.example.com",)}, subdomains=("a",))
    assert idx.sites(["A.Example.com."]) == {"a"}
    assert idx.sites(["*.example.com"]) == {"a"}
    assert idx.sites(["x.y.a.example.com"]) == {"a"}
    assert idx.sites(["q.w.example.com"]) == {"w"}
    assert idx.sites(["example.com", "aa.example.com", "a.example.com.evil"]) == set()
    assert NameIndex({"a": ("a.example.com",)}).sites(["x.a.example.com"]) == set()


def test_log_list_errors_name_the_source_and_field() -> None:
    log = CTLog()
    log._server = None
    data = {"operators": [{"name": "x", "logs": [{
        "key": base64.b64encode(log.key_der).decode(), "log_id": base64.b64encode(b"0" * 32).decode(),
        "url": "http://127.0.0.1:1/"}]}]}
    with pytest.raises(loglist.LogListError, match=r"list.json: operators\[0\].logs\[0\].log_id"):
        loglist.parse(data, "list.json")
    with pytest.raises(loglist.LogListError, match="not a CT log list"):
        loglist.parse({"logs": []}, "list.json")
    data["operators"][0]["logs"][0]["log_id"] = base64.b64encode(log.log_id).decode()  # type: ignore[index]
    (info,) = loglist.parse(json.loads(json.dumps(data)), "list.json")
    assert info.url == "http://127.0.0.1:1/" and info.log_id == log.log_id


def test_prefilter_never_drops_an_entry_that_names_a_site(lab: Lab) -> None:
    idx = NameIndex(SITES, subdomains=("shop",))
    hits = [["WWW.Shop.Example.TEST"], ["*.example.test"], ["deep.api.shop.example.test"],
            ["blog.example.test", "x.example.org"]]
    for names in hits:
        c, _ = pki.make_leaf(lab.rogue, names)
        lab.log.add_chain([c, lab.rogue.cert])
    miss, _ = pki.make_leaf(lab.rogue, ["example.org", "shop.example.org"])
    lab.log.add_chain([miss, lab.rogue.cert])
    leaves = [leaf for leaf, _ in lab.log._entries]
    assert [idx.may_match(leaf) for leaf in leaves] == [True] * 4 + [False]
    assert all(idx.sites(n) for n in hits) and not idx.sites(["example.org", "shop.example.org"])
