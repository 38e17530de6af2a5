"""DNS-01 on real parts: BIND 9 authoritative for example.test with TSIG-signed updates, and
two Pebble CAs that resolve through it (conftest: bind_dns, pebble_dns_a, pebble_dns_b)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certfailover import config as config_mod
from certfailover import keys
from certfailover.errors import IssuanceError, TransientIssuanceError
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import StandaloneSolver
from certfailover.issuers.dns01 import DeadlineReached, Journal, Rfc2136Solver, TsigKey
from certfailover.issuers.dns_settings import journal_dir
from certfailover.model import CertState, utcnow
from certfailover.names import cert_names, name_matches
from certfailover.probe import leaf_sha256, served_chain
from certfailover.wiring import build, build_daemon
from certfailover_lab.bind import BindServer
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sitelab import DOMAIN, Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration

RECORD = "_acme-challenge.example.test"
NAMES = ["example.test", "*.example.test"]


def solver(bind: BindServer, tmp: Path, **kw: object) -> Rfc2136Solver:
    args: dict[str, object] = {"nameserver_port": bind.port, "journal": Journal(tmp / "journal")}
    args.update(kw)
    key = args.pop("key", TsigKey(bind.key_name, bind.key_secret))
    server = args.pop("server", bind.address)
    return Rfc2136Solver(str(server), key, **args)  # type: ignore[arg-type]


def issuer(ca: PebbleCA, tmp: Path, s: object) -> AcmeIssuer:
    return AcmeIssuer(ca.name, ca.directory_url, email=None, ca_bundle=ca.ca_bundle,
                      account_key_path=tmp / f"{ca.name}-account.pem", solver=s)  # type: ignore[arg-type]


def csr(names: list[str]) -> bytes:
    return keys.csr_pem(keys.generate("ec-p256"), names)


def journal_empty(tmp: Path) -> bool:
    return not list((tmp / "journal").glob("*.json"))


def test_two_cas_issue_a_wildcard_and_its_base_through_bind(
    tmp_path: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA, pebble_dns_b: PebbleCA
) -> None:
    issued = {}
    for ca in (pebble_dns_a, pebble_dns_b):
        out = issuer(ca, tmp_path, solver(bind_dns, tmp_path)).issue(
            csr(NAMES), deadline=utcnow() + timedelta(seconds=60))
        leaf = x509.load_pem_x509_certificate(out.leaf_pem)
        assert sorted(cert_names(leaf)) == sorted(NAMES)
        issued[ca.name] = leaf
        # removed after success, and nothing left in the journal
        assert bind_dns.txt(RECORD) == []
        assert journal_empty(tmp_path)
    roots = {ca.name: x509.load_pem_x509_certificate(ca.root_pem()) for ca in
             (pebble_dns_a, pebble_dns_b)}
    assert roots["pebble-dns-a"].subject != roots["pebble-dns-b"].subject, "independent CAs"
    assert issued["pebble-dns-a"].issuer != issued["pebble-dns-b"].issuer


class SilentAtCleanup(Rfc2136Solver):
    """BIND answers the records' additions, then stops answering: every removal waits out the
    deadline it is given (recorded) and fails."""

    deadlines: list[float]

    def _delete(self, name: str, value: str, deadline: float) -> None:
        self.deadlines.append(deadline)
        time.sleep(max(0.0, deadline - time.monotonic()))
        raise DeadlineReached(f"DNS-01: {name}: deadline reached")


def test_an_orders_records_share_one_cleanup_deadline(
    tmp_path: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA
) -> None:
    """Two records (the name and its wildcard), a DNS that goes silent before they are removed:
    the order pays one cleanup_timeout, not one per record, then finalizes; both records stay
    in the journal for the next start."""
    s = SilentAtCleanup(bind_dns.address, TsigKey(bind_dns.key_name, bind_dns.key_secret),
                        nameserver_port=bind_dns.port, journal=Journal(tmp_path / "journal"))
    s.deadlines, s.cleanup_timeout = [], 1.5
    out = issuer(pebble_dns_a, tmp_path, s).issue(csr(NAMES),
                                                  deadline=utcnow() + timedelta(seconds=60))
    assert sorted(cert_names(x509.load_pem_x509_certificate(out.leaf_pem))) == sorted(NAMES)
    assert len(s.deadlines) == 2 and s.deadlines[0] == s.deadlines[1], s.deadlines
    left = Journal(tmp_path / "journal").entries(s.owner)
    assert len(left) == 2 and bind_dns.txt(RECORD) != []
    plain = solver(bind_dns, tmp_path)  # the DNS answers again: the next start's clean-up
    for e in left:
        plain._delete(e.name, e.value, time.monotonic() + 5)
    assert bind_dns.txt(RECORD) == []


def test_wrong_tsig_secret_and_unknown_key_name_are_named(
    tmp_path: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA
) -> None:
    wrong = TsigKey(bind_dns.key_name, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(IssuanceError) as exc:
        issuer(pebble_dns_a, tmp_path, solver(bind_dns, tmp_path, key=wrong)).issue(
            csr(NAMES), deadline=utcnow() + timedelta(seconds=30))
    assert not isinstance(exc.value, TransientIssuanceError), "a refusal is not retried"
    assert f"TSIG key {bind_dns.key_name!r}" in str(exc.value)
    assert "signature" in str(exc.value)
    unknown = TsigKey("nobody.", bind_dns.key_secret)
    with pytest.raises(IssuanceError, match="TSIG key 'nobody.'.*know the key"):
        solver(bind_dns, tmp_path, key=unknown).present(
            "example.test", "x" * 43, deadline=time.monotonic() + 5)
    assert bind_dns.key_secret not in str(exc.value)
    assert bind_dns.txt(RECORD) == []


def test_no_answer_from_an_authoritative_server_is_bounded_and_cleaned(
    tmp_path: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA
) -> None:
    # the zone's NS set is asked on a port where nothing answers: never "published"
    s = solver(bind_dns, tmp_path, nameserver_port=bind_dns.closed_port(), timeout=0.5,
               propagation_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError, match="unreachable") as exc:
        issuer(pebble_dns_a, tmp_path, s).issue(csr(NAMES),
                                                deadline=utcnow() + timedelta(seconds=4))
    took = time.monotonic() - started
    assert took < 5.5, f"bounded by the issue deadline, took {took:.1f}s"
    assert "127.0.0.1" in str(exc.value)
    assert bind_dns.txt(RECORD) == [], "removed after the failure"
    assert journal_empty(tmp_path)


def test_unreachable_update_server_is_a_bounded_failure(
    tmp_path: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA
) -> None:
    with socket.socket() as silent:  # accepts TCP and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        s = solver(bind_dns, tmp_path, server=f"127.0.0.1:{silent.getsockname()[1]}",
                   zone="example.test", timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TransientIssuanceError, match="no answer in time"):
            issuer(pebble_dns_a, tmp_path, s).issue(csr(NAMES),
                                                    deadline=utcnow() + timedelta(seconds=3))
        took = time.monotonic() - started
    assert took < 4.5, f"bounded by the issue deadline, took {took:.1f}s"


def test_interrupted_issuance_is_cleaned_at_the_next_start(
    tmp_path: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA
) -> None:
    """A process killed while it waits for propagation leaves the TXT record behind; the next
    solver's start removes it (the journal names it and its dead pid)."""
    code = f"""
import time
from datetime import timedelta
from pathlib import Path
from certfailover import keys
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.dns01 import DeadlineReached, Journal, Rfc2136Solver, TsigKey
from certfailover.model import utcnow
s = Rfc2136Solver({bind_dns.address!r}, TsigKey({bind_dns.key_name!r}, {bind_dns.key_secret!r}),
                  nameserver_port={bind_dns.closed_port()}, propagation_timeout=300,
                  journal=Journal(Path({str(tmp_path / "journal")!r})))
i = AcmeIssuer({pebble_dns_a.name!r}, {pebble_dns_a.directory_url!r}, email=None,
               ca_bundle=Path({str(pebble_dns_a.ca_bundle)!r}),
               account_key_path=Path({str(tmp_path / "acct.pem")!r}), solver=s)
i.issue(keys.csr_pem(keys.generate("ec-p256"), {NAMES!r}),
        deadline=utcnow() + timedelta(seconds=300))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        end = time.monotonic() + 30
        while len(bind_dns.txt(RECORD)) < 2 and time.monotonic() < end:
            assert proc.poll() is None, "the issuing process ended early"
            time.sleep(0.05)
        left = bind_dns.txt(RECORD)
        assert len(left) == 2, "two TXT records (wildcard and base) at the same name"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert sorted(bind_dns.txt(RECORD)) == sorted(left), "the kill left them behind"
    assert len(list((tmp_path / "journal").glob("*.json"))) == 2
    assert solver(bind_dns, tmp_path).clean_leftovers() == 2
    assert bind_dns.txt(RECORD) == []
    assert journal_empty(tmp_path)


def test_http01_on_a_wildcard_is_a_clear_error(
    tmp_path: Path, pebble_dns_a: PebbleCA, http01_port: int
) -> None:
    """The CA offers only dns-01 for a wildcard: an HTTP-01 issuer says so, naming both."""
    s = StandaloneSolver("127.0.0.1", http01_port)
    with pytest.raises(IssuanceError, match=r"offers no http-01 challenge for \*\.example\.test "
                                            r"\(offered: dns-01\)"):
        issuer(pebble_dns_a, tmp_path, s).issue(csr(["*.example.test"]),
                                                deadline=utcnow() + timedelta(seconds=30))


# --------------------------------------------------------- a wildcard site on nginx, failover


def _challenge(bind: BindServer) -> dict[str, object]:
    return {"type": "dns-01-rfc2136", "server": bind.address, "key_name": bind.key_name,
            "key_secret": f"file:{bind.secret_file}", "nameserver_port": bind.port,
            "timeout": 5, "propagation_timeout": 20}


@pytest.fixture()
def wild_lab(tmp_path: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA,
             pebble_dns_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    yield from make_lab(
        tmp_path,
        [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in (pebble_dns_a, pebble_dns_b)],
        [pebble_dns_a.root_pem(), pebble_dns_b.root_pem()],
        http01_port,
        site_extra={"domains": [DOMAIN, *NAMES]},
        challenge=_challenge(bind_dns),
    )


def test_wildcard_site_fails_over_between_two_cas_on_nginx(
    wild_lab: Lab, bind_dns: BindServer
) -> None:
    lab = wild_lab
    assert lab.rt.config.site("www").domains == (DOMAIN, *NAMES)
    lab.rt.engine.tick()
    certs = lab.rt.db.certs("www")
    assert sorted(c.ca for c in certs) == ["pebble-dns-a", "pebble-dns-b"]
    for c in certs:
        leaf = x509.load_pem_x509_certificate((Path(c.path) / "cert.pem").read_bytes())
        assert sorted(cert_names(leaf)) == sorted([DOMAIN, *NAMES])
    before = lab.active()
    assert before.ca == "pebble-dns-a" and lab.served_sha() == before.sha256
    # a name only the wildcard covers gets the same certificate, and it matches
    other = served_chain(lab.nginx.endpoint, "api.example.test")[0]
    assert leaf_sha256(other) == before.sha256
    assert any(name_matches(n, "api.example.test") and n.startswith("*.")
               for n in cert_names(other))

    lab.rt.db.distrust("pebble-dns-a", before.created, "lab: CA A distrusted")
    report = lab.rt.engine.tick()
    after = lab.active()
    assert after.ca == "pebble-dns-b"
    assert "failover" in [e.kind for e in report.events]
    assert lab.wait_served(after.sha256)
    assert leaf_sha256(served_chain(lab.nginx.endpoint, "api.example.test")[0]) == after.sha256
    assert bind_dns.txt(RECORD) == [] and bind_dns.txt(f"_acme-challenge.{DOMAIN}") == []
    assert not list(journal_dir(lab.rt.config.store).glob("*.json"))


def test_daemon_start_removes_the_records_of_a_crashed_run(
    wild_lab: Lab, bind_dns: BindServer
) -> None:
    """Records a killed process added (journaled with its pid) are removed by Runtime.startup."""
    store = wild_lab.rt.config.store
    code = f"""
import os, time
from pathlib import Path
from certfailover.issuers.dns01 import DeadlineReached, Journal, Rfc2136Solver, TsigKey
s = Rfc2136Solver({bind_dns.address!r}, TsigKey({bind_dns.key_name!r}, {bind_dns.key_secret!r}),
                  journal=Journal(Path({str(journal_dir(store))!r})))
s.present("*.example.test", "C" * 43, deadline=time.monotonic() + 10)
os._exit(9)
"""
    subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert bind_dns.txt(RECORD) == ["C" * 43]
    rt = build(config_mod.load(wild_lab.config_path))
    rt.startup()
    assert bind_dns.txt(RECORD) == []
    assert not list(journal_dir(store).glob("*.json"))


# ------------------------------------------------------- a silent DNS server delays no failover


class SilentDns:
    """A TCP port that accepts connections and never answers (a DNS server gone quiet)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted += 1

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def _until(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _events(lab: Lab, kind: str) -> list[Any]:
    return [e for e in lab.rt.db.events(site="www") if e.kind == kind]


def _switch_on_time_with_silent_dns(lab: Lab, bind: BindServer, silent: SilentDns,
                                      a: PebbleCA, b: PebbleCA) -> None:
    assert lab.rt.engine.order(lab.rt.config.site("www"), b.name) is not None
    # from now on the DNS primary accepts and never answers
    text = lab.config_path.read_text()
    lab.config_path.write_text(text.replace(f'"{bind.address}"',
                                            f'"127.0.0.1:{silent.port}"'))
    rt = build(config_mod.load(lab.config_path))
    assert rt.config.site("www").challenge.dns.server == f"127.0.0.1:{silent.port}"
    daemon = build_daemon(rt.engine, rt.config, interval=rt.config.daemon.interval)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        _until(lambda: any(c.state is CertState.ACTIVE for c in lab.rt.db.certs("www")),
               "activation")
        _until(lambda: silent.accepted > 0, "C's order to reach the DNS server")
        lab.rt.db.distrust(a.name, lab.rt.engine.clock(), "test")
        lab.rt.engine.record(None, "www", "distrust", "test distrusts A",
                             ca=a.name)
        _until(lambda: bool(_events(lab, "failover")), "the failover", 10)
        took = (_events(lab, "failover")[0].time - _events(lab, "distrust")[0].time).total_seconds()
        assert took <= 3, f"distrust -> verified switch took {took:.2f}s"
        assert lab.active().ca == b.name
        assert lab.wait_served(lab.active().sha256)
        print(f"\nsilent DNS: distrust -> verified switch {took:.2f}s")
    finally:
        daemon.stop_event.set()
        daemon._wake.set()
        t.join(10)
        daemon.close(5)


def test_a_silent_dns_server_delays_no_failover(
    tmp_path: Path, lab_dir: Path, bind_dns: BindServer, pebble_dns_a: PebbleCA,
    pebble_dns_b: PebbleCA, http01_port: int
) -> None:
    """A active, B standby; C's order hangs on the DNS update (the server accepts and never
    answers) when A is distrusted: the daemon's switch to B is on time all the same."""
    ca_c = PebbleCA(tmp_path / "pebble-dns-c", name="pebble-dns-c", http_port=http01_port,
                    dns_server=bind_dns.address, nonce_reject_percent=0)
    silent = SilentDns()
    cas = (pebble_dns_a, pebble_dns_b, ca_c)
    try:
        for lab in make_lab(
            tmp_path, [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in cas],
            [c.root_pem() for c in cas], http01_port,
            daemon={"verify_timeout": 5, "issue_timeout": 30, "interval": 1},
            site_extra={"domains": [DOMAIN, *NAMES], "min_standbys": 2},
            challenge={**_challenge(bind_dns), "zone": "example.test"},  # UPDATE at once
        ):
            _switch_on_time_with_silent_dns(lab, bind_dns, silent, pebble_dns_a, pebble_dns_b)
    finally:
        silent.close()
        ca_c.stop()
