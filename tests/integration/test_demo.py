"""`certfailover demo` end to end: the same code `make demo` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certfailover.cli.main import main

pytestmark = pytest.mark.integration


def test_demo_fails_over_verified_and_replenishes(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--json", "demo", "--workdir", str(tmp_path / "demo"), "--interval", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    result = json.loads(out.out)
    assert result["ok"] is True
    assert result["final_ca"] == "ca-b"
    assert result["new_standby"].startswith("www/ca-a/")
    assert result["detect_to_switch"] < 5.0, "revocation to verified switch in under 5 s"
    messages = [m for _, m in result["timeline"]]
    assert any(m.startswith("curl trusting only ca-b's root: OK") for m in messages)
    assert any("fails, as it should" in m for m in messages)
    active = [c for c in result["status"]["certs"] if c["state"] == "active"]
    assert len(active) == 1 and active[0]["ca"] == "ca-b"
