"""`distrust CA --site SITE` / `undistrust CA --site SITE` on an offline config: a distrust of one
site only, said in status, refused for a site or CA that is not configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certfailover.cli.main import main
from certfailover.store.db import Database
from certfailover.testing import pki
from certfailover_lab.sites import offline_config


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_distrust_for_one_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = pki.write_bundle(tmp_path / "roots.pem", pki.make_root("Root"))
    cfg = str(offline_config(tmp_path, bundle))
    code, out, err = run(capsys, "--config", cfg, "--json", "distrust", "a", "--site", "www",
                         "--reason", "mis-issued", "--no-tick")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["distrusted"] == "a" and doc["site"] == "www"
    assert [e["kind"] for e in doc["events"]] == ["distrust"]
    assert doc["events"][0]["data"] == {"ca": "a", "only_site": True}
    db = Database(f"sqlite:///{tmp_path / 'store' / 'state.db'}")
    assert db.distrusted() == {} and db.site_distrust() == {"www": {"a": "mis-issued"}}

    code, out, _ = run(capsys, "--config", cfg, "--json", "status")
    assert code == 0 and "a (mis-issued (for site www only))" in out

    code, out, _ = run(capsys, "--config", cfg, "undistrust", "a", "--site", "www")
    assert code == 0 and "removed from the distrust list of site www" in out
    assert db.site_distrust() == {}


@pytest.mark.parametrize(("argv", "words"), [
    (["distrust", "a", "--site", "nope"], "'nope' is not a configured [[site]]"),
    (["undistrust", "a", "--site", "nope"], "'nope' is not a configured [[site]]"),
    (["distrust", "zz", "--site", "www"], "'zz' is not a configured [[ca]]"),
])
def test_distrust_site_errors_name_what_is_wrong(tmp_path: Path, argv: list[str], words: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bundle = pki.write_bundle(tmp_path / "roots.pem", pki.make_root("Root"))
    code, _, err = run(capsys, "--config", str(offline_config(tmp_path, bundle)), *argv)
    assert code == 2 and words in err
