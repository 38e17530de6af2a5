"""A site under certfailover on lab parts: a config, a store, a real nginx serving live/<site>.

Used by the integration tests and `certfailover demo`. `make_lab` bootstraps the way an operator
does: the first certificate is issued before the web server can start (nginx needs a file),
then the engine activates it with a verified handshake like any other switch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from certfailover import config as config_mod
from certfailover.model import Cert, CertState
from certfailover.probe import leaf_sha256, served_chain
from certfailover.wiring import Runtime, build

from .faults import FaultProxy
from .sites import LabCAEntry, write_config
from .webservers import VHost, WebServer, start_nginx

DOMAIN = "www.example.test"


@dataclass
class Lab:
    rt: Runtime
    nginx: WebServer
    bundle: Path
    config_path: Path

    def served_sha(self) -> str:
        return leaf_sha256(served_chain(self.nginx.endpoint, DOMAIN)[0])

    def wait_served(self, sha256: str, *, steady: float = 0.3, timeout: float = 5.0) -> bool:
        """True once every handshake for `steady` seconds shows `sha256`: after a reload, nginx's
        old and new workers answer side by side for a moment."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while time.monotonic() < deadline:
            if self.served_sha() == sha256:
                since = since if since is not None else time.monotonic()
                if time.monotonic() - since >= steady:
                    return True
            else:
                since = None
            time.sleep(0.02)
        return False

    def active(self) -> Cert:
        return next(c for c in self.rt.db.certs("www") if c.state is CertState.ACTIVE)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.rt.db.events(site="www")]


class Gate(FaultProxy):
    """A TCP forwarder in front of a CA that can be shut, to make the CA 'down' for real.

    A FaultProxy seen as a gate: `open = True` forwards ("pass"), `open = False` resets every
    connection ("reset"), including the keep-alive ones opened while it was open.
    """

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)

    @property
    def open(self) -> bool:
        return self.mode == "pass"

    @open.setter
    def open(self, value: bool) -> None:
        self.mode = "pass" if value else "reset"


def make_lab(
    tmp_path: Path,
    cas: list[LabCAEntry],
    roots: list[bytes],
    http01_port: int,
    *,
    reload: list[str] | None = None,
    daemon: dict[str, float] | None = None,
    site_extra: dict[str, object] | None = None,
    extra_toml: str = "",
    challenge: dict[str, object] | None = None,
) -> Iterator[Lab]:
    """`site_extra`: more [[site]] keys (min_standbys, revocation, ...); `extra_toml`: more
    tables appended to the config ([schedule], [notify], ...); `challenge`: the
    [site.challenge] table (default: HTTP-01 standalone on `http01_port`)."""
    daemon = daemon or {"verify_timeout": 5}
    bundle = tmp_path / "clients.pem"
    bundle.write_bytes(b"".join(roots))
    store = tmp_path / "store"
    live = store / "live" / "www"
    cfg_path = tmp_path / "certfailover.toml"
    site = {
        "name": "www",
        "domains": [DOMAIN],
        "cas": [c.name for c in cas],
        "server": "web",
        "endpoints": ["127.0.0.1:1"],
        "trust": [str(bundle)],
        **(site_extra or {}),
    }
    if challenge is None:
        challenge = {"type": "http-01-standalone", "listen": f"127.0.0.1:{http01_port}"}
    write_config(
        cfg_path,
        store=store,
        cas=cas,
        server=None,
        site={**site, "server": None},
        challenge=challenge,
        daemon=daemon,
    )
    if extra_toml:
        cfg_path.write_text(cfg_path.read_text() + "\n" + extra_toml)
    # bootstrap: nginx needs a certificate file to start; issue the first one without a server
    rt0 = build(config_mod.load(cfg_path))
    first = rt0.engine.issue(rt0.config.site("www"), cas[0].name)
    rt0.vault.point_live("www", Path(first.path))
    nginx = start_nginx(tmp_path / "nginx", [VHost(DOMAIN, (live,))])
    spec = {**nginx.spec, "name": "web"}
    if reload is not None:
        spec["reload"] = reload
    site["endpoints"] = [str(nginx.endpoint)]
    write_config(
        cfg_path,
        store=store,
        cas=cas,
        server=spec,
        site=site,
        challenge=challenge,
        daemon=daemon,
    )
    if extra_toml:
        cfg_path.write_text(cfg_path.read_text() + "\n" + extra_toml)
    try:
        yield Lab(build(config_mod.load(cfg_path)), nginx, bundle, cfg_path)
    finally:
        nginx.stop()
