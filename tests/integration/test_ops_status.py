"""`status`, `events` and `pins` on a real site (two Pebble CAs, nginx), text and --json."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from certfailover.cli.main import main
from certfailover.pins import spki_pin
from certfailover.probe import served_chain
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sitelab import DOMAIN, Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration


@pytest.fixture
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    yield from make_lab(tmp_path, [LabCAEntry(c.name, c.directory_url, c.ca_bundle)
                                   for c in (pebble_a, pebble_b)],
                        [pebble_a.root_pem(), pebble_b.root_pem()], http01_port)


def cli(lab: Lab, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--config", str(lab.config_path), *args])
    return code, capsys.readouterr().out


def as_json(lab: Lab, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out = cli(lab, capsys, "--json", *args)
    assert code == 0
    return json.loads(out)


def test_status_events_and_pins(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab.rt.engine.tick()
    lab.rt.engine.tick()  # the standby issued in the first tick is checked in the second
    active = lab.active()
    standby = next(c for c in lab.rt.db.certs("www") if c.id != active.id)

    code, text = cli(lab, capsys, "status")
    assert code == 0
    lines = text.splitlines()
    header = next(x for x in lines if x.startswith("   CA") or "INDEPENDENCE" in x)
    assert all(h in header for h in ("CA", "DAYS", "HEALTH", "TRUST", "INDEPENDENCE"))
    row_a = next(x for x in lines if "pebble-a" in x)
    row_b = next(x for x in lines if "pebble-b" in x)
    assert row_a.startswith("*") and not row_b.startswith("*")
    assert "independent" in row_b
    doc = as_json(lab, capsys, "status", "www")
    site = doc["sites"][0]
    assert site["active"] == active.id and site["standbys_healthy"] == 1
    rows = {c["id"]: c for c in site["certs"]}
    assert rows[standby.id]["independence"] == [] and rows[standby.id]["trust"] == {}
    assert 0 < rows[active.id]["days_left"] <= (active.not_after - active.not_before).days + 1

    since = (active.created - timedelta(seconds=1)).isoformat()
    code, text = cli(lab, capsys, "events", "--site", "www", "--since", since)
    assert code == 0
    kinds = [ln.split()[3] for ln in text.splitlines()]
    assert kinds[:1] == ["issued"] and "activated" in kinds, text
    events = as_json(lab, capsys, "events", "--site", "www")["events"]
    assert [e["kind"] for e in events] == kinds
    future = (active.created + timedelta(days=1)).isoformat()
    assert as_json(lab, capsys, "events", "--since", future)["events"] == []
    assert main(["--config", str(lab.config_path), "events", "--since", "yesterday"]) == 2
    assert "--since 'yesterday'" in capsys.readouterr().err

    pins = as_json(lab, capsys, "pins", "www")
    roles = [p["role"] for p in pins["pins"]]
    assert roles[:3] == ["active", "standby", "spare"], roles
    # then every intermediate and root of every path that may be served (docs/chains.md)
    authorities = pins["pins"][3:]
    assert {p["role"] for p in authorities} == {"intermediate", "root"}
    assert {p["ca"] for p in authorities if p["role"] == "root"} == {active.ca, standby.ca}
    served = served_chain(lab.nginx.endpoint, DOMAIN)[0]
    assert pins["pins"][0]["pin_sha256"] == spki_pin(served.public_key())
    assert pins["pins"][0]["cert_id"] == active.id and pins["pins"][1]["cert_id"] == standby.id
    spare = Path(pins["spare_key"])
    assert spare == lab.rt.config.store / "spare" / "www.key"
    assert stat.S_IMODE(spare.stat().st_mode) == 0o600
    assert len({p["pin_sha256"] for p in pins["pins"][:3]}) == 3
    code, text = cli(lab, capsys, "pins", "www")
    assert code == 0 and pins["pins"][2]["pin_sha256"] in text, "the spare key is kept"
