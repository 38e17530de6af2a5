"""The lab CT log is honest by an independent client: Debian's certspotter reads it, verifies
every tree head signature and recomputes the signed root from the entries (certspotter 0.16
audits by rebuilding the tree), and reports the watched names, certificates and
precertificates alike."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfailover_lab import pki
from certfailover_lab.ctlog import POISON_OID, CTLog, make_precert, precert_tbs, submit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("certspotter") is None, reason="certspotter not installed "
                       "(make deps)"),
]


def _state(state_dir: Path, log: CTLog) -> dict[str, object] | None:
    name = base64.urlsafe_b64encode(log.log_id).decode().rstrip("=")
    path = state_dir / "logs" / name / "state.json"
    try:
        data: dict[str, object] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return None


def test_certspotter_verifies_the_lab_log_and_reports_the_watched_names(tmp_path: Path) -> None:
    root = pki.make_root("Lab CT Root")
    ca = pki.make_intermediate(root, "Lab CT Issuing CA")
    watched, _ = pki.make_leaf(ca, ["shop.example.test", "www.shop.example.test"])
    other, _ = pki.make_leaf(ca, ["unrelated.example.org"])
    pre = make_precert(ca.cert, ca.key, ["api.shop.example.test"])  # type: ignore[arg-type]
    with CTLog() as log:
        for i in range(40):  # filler so the tree has many levels and odd subtrees
            filler, _ = pki.make_leaf(ca, [f"filler{i}.example.org"])
            log.add_chain([filler, ca.cert])
        sct = submit(log.url, [watched, ca.cert])
        submit(log.url, [other, ca.cert])
        submit(log.url, [pre, ca.cert], precert=True)
        assert sct["id"] and sct["signature"]
        assert log.size == 43

        (tmp_path / "logs.json").write_text(json.dumps(log.log_list()))
        (tmp_path / "watchlist").write_text(".shop.example.test\n")  # and its subdomains
        state_dir, config_dir = tmp_path / "state", tmp_path / "config"
        config_dir.mkdir()
        env = dict(os.environ, CERTSPOTTER_CONFIG_DIR=str(config_dir), HOME=str(tmp_path))
        proc = subprocess.Popen(
            ["certspotter", "-stdout", "-verbose", "-no_save", "-logs", str(tmp_path / "logs.json"),
             "-state_dir", str(state_dir), "-watchlist", str(tmp_path / "watchlist")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + 60
            state = None
            while time.monotonic() < deadline and proc.poll() is None:
                state = _state(state_dir, log)
                sth = state.get("verified_sth") if state else None
                if isinstance(sth, dict) and sth.get("tree_size") == 43:
                    break
                time.sleep(0.2)
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
    assert state is not None, f"certspotter wrote no state; stderr:\n{err}"
    sth = state["verified_sth"]
    assert isinstance(sth, dict) and sth["tree_size"] == 43, f"not verified; stderr:\n{err}"
    errors = [line for line in err.splitlines()
              if "error" in line.lower() and "context canceled" not in line]  # our SIGTERM
    assert not errors, err  # no signature, root-hash or parse error on any entry
    log_dir = state_dir / "logs" / base64.urlsafe_b64encode(log.log_id).decode().rstrip("=")
    assert not list((log_dir / "malformed_entries").iterdir())  # every entry parsed
    assert "shop.example.test" in out and "api.shop.example.test" in out
    assert "unrelated.example.org" not in out and "filler" not in out
    assert out.count("crt.sh =") == 2, out  # the certificate and the precertificate


def test_precert_tbs_is_the_certificate_tbs_without_the_poison() -> None:
    root = pki.make_root("Lab CT Root")
    pre = make_precert(root.cert, root.key, ["a.example.test"])  # type: ignore[arg-type]
    tbs = asn1x509.TbsCertificate.load(precert_tbs(pre.public_bytes(Encoding.DER)))
    oids = [e["extn_id"].dotted for e in tbs["extensions"]]
    assert POISON_OID not in oids and "2.5.29.17" in oids
    assert tbs["serial_number"].native == pre.serial_number
    assert isinstance(pre.extensions.get_extension_for_class(x509.PrecertPoison).value,
                      x509.PrecertPoison)
