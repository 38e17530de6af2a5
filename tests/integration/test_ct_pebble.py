"""The issue's scenario end to end on real lab CAs: certfailover issues the site's two
certificates from two Pebble CAs, a third Pebble CA issues one for the same name outside
certfailover, all three are logged to the lab CT log, and one `ct poll` raises exactly the
third CA's certificate."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from certfailover import keys
from certfailover.cli.main import main
from certfailover.issuers.acme import AcmeIssuer
from certfailover.issuers.challenges import StandaloneSolver
from certfailover.model import utcnow
from certfailover_lab import EabCredentials
from certfailover_lab.ctlog import CTLog, log_pem
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.sites import LabCAEntry, write_config

pytestmark = pytest.mark.integration


def test_a_third_lab_cas_certificate_is_raised_and_ours_are_not(
        tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, pebble_eab: PebbleCA,
        pebble_eab_credentials: EabCredentials, http01_port: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    domain = f"shop-{uuid.uuid4().hex[:10]}.example.test"
    roots = tmp_path / "roots.pem"
    roots.write_bytes(pebble_a.root_pem() + pebble_b.root_pem())
    cfg = write_config(
        tmp_path / "certfailover.toml", store=tmp_path / "store",
        cas=[LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in (pebble_a, pebble_b)],
        server=None, site={"name": "www", "domains": [domain],
                           "cas": [pebble_a.name, pebble_b.name], "trust": [str(roots)]},
        challenge={"type": "http-01-standalone", "listen": f"127.0.0.1:{http01_port}"})
    with CTLog() as log:
        (tmp_path / "logs.json").write_text(json.dumps(log.log_list()))
        cfg.write_text(cfg.read_text() + f'\n[ct]\nlog_list = "{tmp_path / "logs.json"}"\n'
                       'start = "beginning"\n')
        assert main(["--config", str(cfg), "--json", "issue"]) == 0
        capsys.readouterr()
        obtained = sorted((tmp_path / "store" / "archive").glob("www/*/*/fullchain.pem"))
        assert len(obtained) == 2
        for pem in obtained:  # the lab CAs' certificates get logged
            log_pem(log.url, pem.read_bytes())

        third = AcmeIssuer(
            pebble_eab.name, pebble_eab.directory_url, email="ops@example.test",
            account_key_path=tmp_path / "third-account.pem",
            solver=StandaloneSolver("127.0.0.1", http01_port), ca_bundle=pebble_eab.ca_bundle,
            eab_kid=pebble_eab_credentials.kid, eab_hmac_key=pebble_eab_credentials.hmac_key)
        key = keys.generate("ec-p256")
        issued = third.issue(keys.csr_pem(key, [domain]), deadline=utcnow() + timedelta(seconds=30))
        log_pem(log.url, issued.fullchain_pem)

        code = main(["--config", str(cfg), "--json", "ct", "poll"])
        out = json.loads(capsys.readouterr().out)
    assert code == 2, out
    (res,) = out["logs"]
    assert (res["entries"], res["matched"]) == (3, 3)
    (u,) = res["unexpected"]
    rogue = x509.load_pem_x509_certificate(issued.leaf_pem)
    assert u["site"] == "www" and u["names"] == [domain]
    assert u["serial"] == format(rogue.serial_number, "x")
    issuer_cn = rogue.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert str(issuer_cn) in u["issuer"]
