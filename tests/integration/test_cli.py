"""The command line as an operator uses it: real config files, real store, real processes."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover import keys
from certfailover.cli.main import main
from certfailover_lab import pki
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.sites import LabCAEntry, offline_config

pytestmark = pytest.mark.integration
PEM = Encoding.PEM


def _config(tmp_path: Path, roots: Path) -> Path:
    return offline_config(tmp_path, roots)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_writes_an_example_then_prints_server_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = tmp_path / "new.toml"
    code, out, _ = _run(capsys, "--config", str(fresh), "init")
    assert code == 0 and fresh.exists() and "edit it" in out
    root = pki.make_root("R")
    cfg = _config(tmp_path, pki.write_bundle(tmp_path / "roots.pem", root))
    code, out, _ = _run(capsys, "--config", str(cfg), "init")
    live = tmp_path / "store" / "live" / "www"
    assert code == 0
    assert f"ssl_certificate {live}/fullchain.pem;" in out
    assert f"ssl_certificate_key {live}/privkey.pem;" in out
    code, out, _ = _run(capsys, "--config", str(cfg), "--json", "init")
    assert json.loads(out)["sites"][0]["haproxy"] == [f"bind :443 ssl crt {live}/combined.pem"]


def test_import_checks_consistency_and_names_the_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = pki.make_root("R")
    inter = pki.make_intermediate(root, "I")
    cfg = _config(tmp_path, pki.write_bundle(tmp_path / "roots.pem", root))
    leaf, key = pki.make_leaf(inter, ["www.example.test"])
    (tmp_path / "cert.pem").write_bytes(leaf.public_bytes(PEM))
    (tmp_path / "chain.pem").write_bytes(inter.pem)
    (tmp_path / "key.pem").write_bytes(keys.key_pem(key))
    (tmp_path / "other.pem").write_bytes(keys.key_pem(keys.generate("ec-p256")))
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    base = ["--config", str(cfg), "import", "www", "--ca", "a"]

    code, _, err = _run(capsys, *base, "--cert", str(tmp_path / "cert.pem"),
                        "--key", str(tmp_path / "other.pem"), "--chain", str(tmp_path / "chain.pem"))
    assert code == 2 and "private key does not belong to the certificate" in err
    code, _, err = _run(capsys, *base, "--cert", str(tmp_path / "junk.pem"),
                        "--key", str(tmp_path / "key.pem"))
    assert code == 2 and "junk.pem" in err
    wrong_chain = pki.make_intermediate(pki.make_root("X"), "X-I")
    (tmp_path / "wrong.pem").write_bytes(wrong_chain.pem)
    code, _, err = _run(capsys, *base, "--cert", str(tmp_path / "cert.pem"),
                        "--key", str(tmp_path / "key.pem"), "--chain", str(tmp_path / "wrong.pem"))
    assert code == 2 and "did not issue" in err
    code, _, err = _run(capsys, *base, "--cert", str(tmp_path / "missing.pem"),
                        "--key", str(tmp_path / "key.pem"))
    assert code == 2 and "missing.pem" in err
    assert not (tmp_path / "store" / "archive" / "www").exists() or not any(
        (tmp_path / "store" / "archive" / "www").rglob("cert.pem")), "nothing stored on error"

    code, out, _ = _run(capsys, *base[:2], "--json", *base[2:], "--cert", str(tmp_path / "cert.pem"),
                        "--key", str(tmp_path / "key.pem"), "--chain", str(tmp_path / "chain.pem"))
    assert code == 0 and json.loads(out)["ca"] == "a"
    # the same key under another CA is refused: keys are never shared across CAs
    code, _, err = _run(capsys, "--config", str(cfg), "import", "www", "--ca", "b",
                        "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "key.pem"))
    assert code == 2 and "already used" in err

    code, out, _ = _run(capsys, "--config", str(cfg), "--json", "status")
    site = json.loads(out)["sites"][0]
    cert = site["certs"][0]
    assert cert["ca"] == "a" and cert["serial"] == format(leaf.serial_number, "x")
    assert cert["not_after"] and cert["state"] == "standby" and "health" in cert


def test_bad_config_is_named_and_nothing_runs(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[site]]\nname = "www"\ndomains = ["x.test"]\ncas = ["nope"]\n')
    code, _, err = _run(capsys, "--config", str(cfg), "status")
    assert code == 2
    assert f"{cfg}: [[site]] 'www'.cas: 'nope' is not a configured [[ca]]" in err
    assert not (tmp_path / "store").exists()


def test_run_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """The daemon is busy (both CAs down, issuance retried up to issue_timeout) when TERM comes:
    it finishes the current step and exits 0."""
    root = pki.make_root("R")
    cfg = _config(tmp_path, pki.write_bundle(tmp_path / "roots.pem", root))
    cfg.write_text(cfg.read_text() + "[daemon]\nissue_timeout = 2\n")
    env = {**os.environ, "CERTFAILOVER_CONFIG": str(cfg)}
    proc = subprocess.Popen([sys.executable, "-m", "certfailover.cli.main", "run", "--interval", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 30  # start-up (imports, store) is slower on a busy machine
    while b"daemon running" not in seen and time.monotonic() < deadline:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
    assert b"daemon running" in seen and proc.poll() is None, seen
    time.sleep(1.0)  # into its work: both CAs down, issuance retried
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, seen + err
    assert b"stopping after the current step" in seen + err


@pytest.fixture()
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    entries = [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in (pebble_a, pebble_b)]
    yield from make_lab(tmp_path, entries, [pebble_a.root_pem(), pebble_b.root_pem()], http01_port)


def test_issue_distrust_failover_and_events_from_the_command_line(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(lab.config_path)
    code, out, _ = _run(capsys, "--config", cfg, "--json", "issue")
    assert code == 0 and len(json.loads(out)["issued"]) == 1  # the standby from pebble-b
    code, out, _ = _run(capsys, "--config", cfg, "--json", "status")
    certs = json.loads(out)["sites"][0]["certs"]
    assert {c["ca"]: c["state"] for c in certs} == {"pebble-a": "active", "pebble-b": "standby"}

    code, out, _ = _run(capsys, "--config", cfg, "--json", "distrust", "pebble-a",
                        "--reason", "in the news")
    assert code == 0
    kinds = [e["kind"] for e in json.loads(out)["events"]]
    assert "distrust" in kinds and "failover" in kinds
    assert lab.active().ca == "pebble-b" and lab.served_sha() == lab.active().sha256

    code, out, _ = _run(capsys, "--config", cfg, "undistrust", "pebble-a")
    assert code == 0
    code, out, _ = _run(capsys, "--config", cfg, "--json", "failover", "www")
    assert code == 0 and json.loads(out)["ok"] is True
    assert lab.active().ca == "pebble-a" and lab.served_sha() == lab.active().sha256

    code, out, _ = _run(capsys, "--config", cfg, "--json", "events", "--site", "www")
    kinds = [e["kind"] for e in json.loads(out)["events"]]
    assert kinds.count("failover") == 2 and "issued" in kinds and "distrust" in kinds
    code, _, err = _run(capsys, "--config", cfg, "distrust", "nope")
    assert code == 2 and "'nope' is not a configured [[ca]]" in err
