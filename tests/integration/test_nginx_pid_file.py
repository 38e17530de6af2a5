"""The nginx `pid_file` option against real nginx: a switch reloads by SIGHUP to the master
after `nginx -t` (no `nginx -s reload`), and a pid file that names no nginx master is an apply
failure that changes nothing: the old certificate stays served and live is rolled back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from certfailover.deploy import Activation, activate, pending_journals
from certfailover.probe import leaf_sha256, served_chain
from certfailover.servers import make_adapter
from certfailover.servers.nginx import NginxAdapter
from certfailover.store.vault import Vault
from certfailover_lab.webservers import LabCA, VHost, chain_validator, start_nginx

pytestmark = pytest.mark.integration

SNI = "www.test"


def test_reload_by_pid_file(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "vault")
    vault.ensure()
    a, b = LabCA.create("ca-a"), LabCA.create("ca-b")
    da, sha_a = a.issue_into(vault, "www", [SNI])
    db, sha_b = b.issue_into(vault, "www", [SNI])
    vault.point_live("www", da)
    validate = chain_validator([a.root.cert, b.root.cert])
    with start_nginx(tmp_path / "nginx", [VHost(SNI, (vault.live_path("www"),))],
                     pid_file=True) as srv:
        adapter = make_adapter(srv.spec)
        assert isinstance(adapter, NginxAdapter) and adapter.pid_file is not None
        # the reload argv would fail: only the signal can have switched the server
        adapter = dataclasses.replace(adapter, reload=("false",))
        [ok] = activate(vault, adapter, [Activation("www", db, sha_b, (srv.endpoint,), SNI)],
                        validate=validate, settle=0.1)
        assert ok.ok, ok.message
        assert leaf_sha256(served_chain(srv.endpoint, SNI)[0]) == sha_b

        missing = dataclasses.replace(adapter, pid_file=tmp_path / "nginx" / "missing.pid")
        [bad] = activate(vault, missing, [Activation("www", da, sha_a, (srv.endpoint,), SNI)],
                         validate=validate, settle=0.1, verify_timeout=2.0)
        assert not bad.ok and bad.rolled_back
        assert "apply failed" in bad.message and "missing.pid" in bad.message
        assert "previous certificate proven served" in bad.message
        assert vault.live_target("www") == db and pending_journals(vault) == []
        assert leaf_sha256(served_chain(srv.endpoint, SNI)[0]) == sha_b
