"""The demo, step by step, on real parts only.

1. Start pebble-challtestsrv (DNS) and two Pebble CAs, A and B. Each CA gets a status service
   that publishes its revocations by OCSP, CRL and ARI, signed with that CA's own intermediate
   key (Pebble 2.4 serves none of these; its `ocspResponderURL` points at the service).
2. Write a config, issue from A, start an nginx of our own on loopback serving live/www.
3. One tick: activate A's certificate (verified by a TLS handshake), issue a standby from B.
4. Run the daemon (1 s interval). Revoke the active certificate at CA A over ACME.
5. The daemon sees the revocation, fails over to B, proves it with a handshake, and issues a
   new standby from A. curl trusting only CA B's root now succeeds.
6. Print the timeline; stop everything that was started.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certfailover.errors import InputError
from certfailover.model import utcnow
from certfailover.status import site_status
from certfailover.wiring import build_daemon

from .pebble import ChallTestSrv, revoke
from .ports import free_port
from .sitelab import DOMAIN, Lab, make_lab
from .stack import RevocableCA

#: the demo's [schedule]: revocation re-checked every second, so the story takes seconds (the
#: defaults are CRL 5 min, OCSP 1 h, ARI 6 h; see schedule.Intervals)
DEMO_SCHEDULE = """
[schedule]
crl = 1
ocsp = 1
ari = 1
minimum = 1
"""


@dataclass
class DemoResult:
    ok: bool
    timeline: list[tuple[float, str]] = field(default_factory=list)
    detect_to_switch: float | None = None  # revocation at the CA -> verified switch (seconds)
    final_ca: str | None = None
    new_standby: str | None = None
    status: dict[str, Any] = field(default_factory=dict)


class Timeline:
    def __init__(self, out: Callable[[str], None]) -> None:
        self.t0 = time.monotonic()
        self.items: list[tuple[float, str]] = []
        self.out = out

    def __call__(self, message: str) -> float:
        t = time.monotonic() - self.t0
        self.items.append((round(t, 3), message))
        self.out(f"[{t:7.2f}s] {message}")
        return t


def _curl(endpoint: str, root: Path) -> tuple[bool, str]:
    host, port = endpoint.rsplit(":", 1)
    if shutil.which("curl") is None:
        return False, "curl is not installed"
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--cacert", str(root), "--resolve",
         f"{DOMAIN}:{port}:{host}", f"https://{DOMAIN}:{port}/"],
        capture_output=True, text=True, check=False)
    return proc.returncode == 0, (proc.stdout.strip() or proc.stderr.strip())


def _wait(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


#: written into every directory the demo creates; only such a directory is emptied again
MARKER = ".certfailover-demo"


def prepare_workdir(workdir: Path) -> None:
    """Make `workdir` an empty directory of the demo's own, or refuse (InputError) and touch
    nothing: a missing or empty directory is taken, one holding MARKER (made by an earlier
    demo) is emptied; anything else (a file, a directory with other files) is refused."""
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise InputError(f"demo workdir {workdir} exists and is not a directory; "
                         "choose another --workdir")
    if workdir.is_dir() and any(workdir.iterdir()):
        if not (workdir / MARKER).is_file():
            raise InputError(
                f"demo workdir {workdir} is not empty and was not created by certfailover demo "
                f"(no {MARKER} in it); nothing was deleted. Choose another --workdir, or remove "
                "it yourself if it is an old demo directory")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("created by `certfailover demo`; the next demo empties "
                                  "this directory\n")


def run_demo(workdir: Path, *, out: Callable[[str], None] = print, interval: float = 1.0) -> DemoResult:
    """Run the demo in `workdir` (see prepare_workdir: a foreign non-empty one is refused)."""
    prepare_workdir(workdir)
    say = Timeline(out)
    result = DemoResult(ok=False)
    with contextlib.ExitStack() as stack:
        say("starting pebble-challtestsrv (DNS for the CAs' HTTP-01 validation)")
        dns = stack.enter_context(ChallTestSrv(workdir / "challtestsrv"))
        http01 = free_port()
        cas = []
        for name in ("ca-a", "ca-b"):
            ca = stack.enter_context(RevocableCA(workdir / name, name=name, http_port=http01,
                                                 dns_server=dns.dns_address))
            cas.append(ca)
            say(f"started CA {name}: ACME {ca.pebble.directory_url}, OCSP {ca.status.ocsp_url}, "
                f"CRL {ca.status.crl_url}")
        a, b = cas
        root_a, root_b = workdir / "root-ca-a.pem", workdir / "root-ca-b.pem"
        root_a.write_bytes(a.pebble.root_pem())
        root_b.write_bytes(b.pebble.root_pem())

        say("issuing the first certificate from ca-a, starting nginx on loopback with live/www")
        lab: Lab = stack.enter_context(contextlib.contextmanager(make_lab)(
            workdir, [a.entry(), b.entry()], [a.pebble.root_pem(), b.pebble.root_pem()], http01,
            daemon={"interval": interval, "verify_timeout": 5, "issue_timeout": 30},
            extra_toml=DEMO_SCHEDULE))
        endpoint = str(lab.nginx.endpoint)
        say(f"nginx serves https://{DOMAIN} at {endpoint}; config {lab.config_path}")

        report = lab.rt.engine.tick()
        for ev in report.events:
            say(f"{ev.kind}: {ev.message}")
        lab.rt.engine.check_site(lab.rt.config.site("www"))
        status = site_status(lab.rt.db, lab.rt.config.site("www"), utcnow())
        for c in status["certs"]:
            out(f"           {'*' if c['state'] == 'active' else ' '} {c['ca']:<6} "
                f"serial {c['serial'][:16]}  {c['state']:<8} {c['health']:<5} "
                f"{c['days_left']:.0f} days left  {c['summary'][:60]}")

        seen = len(lab.rt.db.events(site="www"))
        daemon = build_daemon(lab.rt.engine, lab.rt.config, interval=interval)
        thread = threading.Thread(target=daemon.run, name="certfailover-daemon", daemon=True)
        thread.start()
        def stop_daemon() -> None:
            daemon.stop_event.set()
            thread.join(30)

        stack.callback(stop_daemon)
        say(f"daemon running as `certfailover run` does (tick every {interval:g} s; revocation "
            "re-checked every second, [schedule] in the demo's config)")

        active = lab.active()
        d = Path(active.path)
        t_revoke = say(f"CA ca-a revokes the active certificate {active.serial} (keyCompromise)")
        revoke(a.pebble.directory_url, a.pebble.ca_bundle, (d / "cert.pem").read_bytes(),
               (d / "privkey.pem").read_bytes(), 1)

        def new_events() -> list[Any]:
            return lab.rt.db.events(site="www")[seen:]

        failover = _wait(lambda: next((e for e in new_events() if e.kind == "failover"), None), 30)
        if failover is None:
            say("no failover within 30 s: FAILED")
            result.timeline = say.items
            return result
        t_switch = say(f"failover: {failover.message}")
        result.detect_to_switch = round(t_switch - t_revoke, 3)
        replenished = _wait(lambda: next((e for e in new_events() if e.kind == "issued"), None), 30)
        if replenished is not None:
            say(f"replenished: {replenished.message}")
            result.new_standby = replenished.data.get("cert")
        ok_b, body_b = _curl(endpoint, root_b)
        say(f"curl trusting only ca-b's root: {'OK' if ok_b else 'FAILED'} ({body_b[:60]})")
        ok_a, body_a = _curl(endpoint, root_a)
        say(f"curl trusting only ca-a's root: {'fails, as it should' if not ok_a else 'UNEXPECTED OK'} "
            f"({body_a[:60]})")
        daemon.stop_event.set()
        thread.join(30)
        result.final_ca = lab.active().ca
        result.status = site_status(lab.rt.db, lab.rt.config.site("www"), utcnow())
        result.ok = bool(ok_b and not ok_a and result.final_ca == "ca-b" and result.new_standby)
        say(f"revocation at the CA -> verified switch: {result.detect_to_switch:.2f} s")
        say("stopping everything the demo started")
    result.timeline = say.items
    say(f"demo {'PASSED' if result.ok else 'FAILED'}")
    result.timeline = say.items
    return result


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `python -m` convenience
    res = run_demo(Path(argv[0] if argv else ".demo"))
    return 0 if res.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
