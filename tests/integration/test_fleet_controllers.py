"""Two fleet controllers (`certfailover run`, real processes) share one PostgreSQL store: they
split the sites by leases, issue each certificate once, seal what they issue, and when one is
killed (-9) the other takes its sites over, writes their key material from the sealed records
into its own store, and fails them over.

Each controller runs in a mount namespace of its own (`unshare -m`) where its private
directory is bound at the one store path every controller is configured with, as on separate
hosts. Real Pebble CAs issuing through DNS-01 on a real BIND (no port to share), real
PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from certfailover_lab.bind import BindServer
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.postgres import PostgresServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                       reason="needs root and unshare(1) for per-controller mount namespaces"),
]
SITES = [f"s{i}" for i in range(6)]
KEK = os.urandom(32).hex()


def _config(path: Path, store: Path, url: str, cas: list[PebbleCA], bind: BindServer,
            bundle: Path) -> Path:
    lines = ["[store]", f"directory = {json.dumps(str(store))}", f"database = {json.dumps(url)}",
             "[daemon]", "interval = 0.5", "issue_timeout = 20", "verify_timeout = 5",
             "[fleet]", 'role = "controller"', 'kek = "env:CF_KEK"', 'converge_timeout = "2s"',
             'lease_ttl = "6s"']
    for ca in cas:
        lines += ["[[ca]]", f"name = {json.dumps(ca.name)}",
                  f"directory = {json.dumps(ca.directory_url)}",
                  f"ca_bundle = {json.dumps(str(ca.ca_bundle))}"]
    for s in SITES:
        lines += ["[[site]]", f"name = {json.dumps(s)}", f"domains = [\"{s}.example.test\"]",
                  f"cas = {json.dumps([c.name for c in cas])}",
                  f"trust = [{json.dumps(str(bundle))}]",
                  "[site.challenge]", 'type = "dns-01-rfc2136"',
                  f"server = {json.dumps(bind.address)}", f"key_name = {json.dumps(bind.key_name)}",
                  f"key_secret = \"file:{bind.secret_file}\"", f"nameserver_port = {bind.port}",
                  "timeout = 5", "propagation_timeout = 20"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _until(cond: Callable[[], bool], what: str, timeout: float = 90) -> None:
    started = time.monotonic()
    deadline = started + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    print(f"{what}: {time.monotonic() - started:.1f} s")  # shown with -s or on failure


class Controller:
    """`certfailover run` in its own mount namespace: `private` is its store, seen at `store`."""

    def __init__(self, name: str, cfg: Path, store: Path, private: Path) -> None:
        private.mkdir(mode=0o700)
        self.private = private
        self.log = private.parent / f"{name}.log"
        script = (f"mount --bind {private} {store} && exec {sys.executable} -m "
                  f"certfailover.cli.main run")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"),
            env={**os.environ, "CERTFAILOVER_CONFIG": str(cfg), "CF_KEK": KEK})

    def alive(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture()
def fleet(tmp_path: Path, postgres: PostgresServer, bind_dns: BindServer,
          pebble_dns_a: PebbleCA, pebble_dns_b: PebbleCA) -> Iterator[dict[str, object]]:
    url = postgres.create_database("fleet_controllers")
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(pebble_dns_a.root_pem() + pebble_dns_b.root_pem())
    store = tmp_path / "store"  # the path both are configured with; each sees its own
    store.mkdir(mode=0o700)
    cfg = _config(tmp_path / "certfailover.toml", store, url, [pebble_dns_a, pebble_dns_b],
                  bind_dns, bundle)
    engine = sa.create_engine(url)
    running: list[Controller] = []
    yield {"cfg": cfg, "store": store, "db": engine, "running": running, "tmp": tmp_path,
           "cas": (pebble_dns_a.name, pebble_dns_b.name)}
    for c in running:
        c.stop()
    engine.dispose()


def _rows(engine: sa.Engine, sql: str) -> list[sa.Row[tuple[object, ...]]]:
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)))
    except sa.exc.ProgrammingError:  # the first controller has not created the schema yet
        return []


def test_two_controllers_split_the_sites_issue_once_and_take_over_a_killed_one(
        fleet: dict[str, object]) -> None:
    cfg, store, db = fleet["cfg"], fleet["store"], fleet["db"]
    tmp, running = fleet["tmp"], fleet["running"]
    ca_a, ca_b = fleet["cas"]  # type: ignore[misc]
    assert isinstance(cfg, Path) and isinstance(store, Path) and isinstance(tmp, Path)
    assert isinstance(db, sa.Engine) and isinstance(running, list)
    one = Controller("c1", cfg, store, tmp / "c1")
    running.append(one)
    two = Controller("c2", cfg, store, tmp / "c2")
    running.append(two)

    def holders() -> Counter[str]:
        return Counter(str(r.holder) for r in _rows(
            db, "SELECT holder FROM fleet_leases WHERE work LIKE 'site:%' AND expires >= now()"))

    # the sites are split (3 + 3) and every site gets one certificate from each CA, once
    _until(lambda: one.alive() and two.alive() and sorted(holders().values()) == [3, 3],
           "the two controllers to split the six sites")
    _until(lambda: one.alive() and two.alive() and len(_rows(
        db, "SELECT id FROM certs WHERE state != 'retired'")) == 12, "two certificates per site")
    _until(lambda: len(_rows(db, "SELECT site FROM fleet_desired")) == 6,
           "every site's active certificate published")
    _until(lambda: len(_rows(db, "SELECT cert_id FROM fleet_sealed")) == 12,
           "every certificate sealed for the other controllers")
    issued = Counter((str(r.site), str(r.ca)) for r in _rows(
        db, "SELECT site, ca FROM orders WHERE outcome = 'issued'"))
    assert issued == Counter({(s, ca): 1 for s in SITES for ca in (ca_a, ca_b)}), issued
    assert not _rows(db, "SELECT id FROM orders WHERE outcome = 'pending'")
    pids = {str(h).rsplit(":", 1)[1] for h in holders()}
    assert len(pids) == 2  # two processes, each holding its share

    def leader() -> str:  # the singleton role (the CT watch): one controller of the two
        rows = _rows(db, "SELECT holder FROM fleet_epoch WHERE name = 'controller'")
        return str(rows[0].holder).rsplit(":", 1)[1] if rows else ""
    _until(lambda: leader() in pids, "one controller to lead", timeout=30)

    # each controller's own store holds the material of every certificate of its sites
    # (issued there, or written from the other's sealed record)
    def local(c: Controller) -> set[str]:
        return {"/".join(p.parent.relative_to(c.private / "archive").parts)
                for p in (c.private / "archive").glob("*/*/*/privkey.pem")}

    def sites_of(c: Controller) -> set[str]:
        return {str(r.work)[5:] for r in _rows(
            db, "SELECT work, holder FROM fleet_leases WHERE work LIKE 'site:%'")
            if str(r.holder).endswith(f":{c.proc.pid}")}

    certs = {str(r.id): str(r.site) for r in _rows(db, "SELECT id, site FROM certs")}
    for c in (one, two):
        _until(lambda c=c: {i for i, s in certs.items() if s in sites_of(c)} <= local(c),
               "each controller to hold the material of its sites", timeout=30)

    # controller 1 dies (-9, no clean release); CA a is distrusted: controller 2 takes over
    # the sites of 1 once their leases expire, writes their material from the sealed records
    # and switches all six sites to CA b
    one.proc.send_signal(signal.SIGKILL)
    one.proc.wait(10)
    distrust = subprocess.run(
        [sys.executable, "-m", "certfailover.cli.main", "distrust", str(ca_a), "--reason",
         "test: CA a distrusted"], env={**os.environ, "CERTFAILOVER_CONFIG": str(cfg),
                                        "CF_KEK": KEK},
        capture_output=True, text=True, timeout=60, check=False)
    assert distrust.returncode == 0, distrust.stderr

    def switched() -> bool:
        two.alive()
        rows = _rows(db, "SELECT d.site, c.ca FROM fleet_desired d JOIN certs c"
                         " ON c.id = d.cert_id")
        return sorted((str(r.site), str(r.ca)) for r in rows) == [(s, ca_b) for s in SITES]
    _until(switched, "controller 2 to switch every site to CA b", timeout=120)
    assert set(holders()) == {h for h in holders() if h.endswith(f":{two.proc.pid}")}
    _until(lambda: leader() == str(two.proc.pid), "the survivor to lead", timeout=30)
    assert len(local(two)) == 12  # its own six, and the six of the dead one, from the seal
    for key in (two.private / "archive").glob("*/*/*/privkey.pem"):
        assert key.stat().st_mode & 0o777 == 0o600
    active = {str(r.site): str(r.ca) for r in _rows(
        db, "SELECT site, ca FROM certs WHERE state = 'active'")}
    assert active == {s: ca_b for s in SITES}
    again = Counter((str(r.site), str(r.ca)) for r in _rows(
        db, "SELECT site, ca FROM orders WHERE outcome = 'issued'"))
    assert again == issued  # nothing issued twice, nor again after the takeover
