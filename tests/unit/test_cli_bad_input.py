"""Bad input on the command line: every error is named, exits with its code, and loses nothing.

Table-driven: each row is a command line and what it must print and return. Offline: the CAs in
the config point at a closed port; nothing here starts a CA or a web server (the lab-backed
`issue` rows are in tests/integration/test_cli_packaging.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from certfailover.cli.main import main
from certfailover.errors import InputError
from certfailover.testing import pki
from certfailover_lab.demo import MARKER, prepare_workdir
from certfailover_lab.sites import offline_config


def _config(tmp_path: Path, extra: str = "") -> Path:
    roots = pki.write_bundle(tmp_path / "roots.pem", pki.make_root("R"))
    return offline_config(tmp_path, roots, extra=extra + "\n[daemon]\nissue_timeout = 1\n")


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# -- errors under --json: one object on stdout, nothing on stderr ---------------------------------

JSON_ERRORS = [
    # (id, argv after --json; {cfg} is the good config, {missing} a path that does not exist,
    #  error type, exit code, words in the message)
    ("missing-config", ["--config", "{missing}", "status"], "ConfigError", 2, "file not found"),
    ("unknown-command", ["--config", "{cfg}", "statu"], "UsageError", 2, "invalid choice: 'statu'"),
    ("bad-option-value", ["--config", "{cfg}", "run", "--interval", "soon"], "UsageError", 2,
     "invalid float value: 'soon'"),
    ("missing-argument", ["--config", "{cfg}", "failover"], "UsageError", 2,
     "the following arguments are required: site"),
    ("unknown-option", ["--config", "{cfg}", "status", "--colour"], "UsageError", 2,
     "unrecognized arguments: --colour"),
    ("no-command", ["--config", "{cfg}"], "UsageError", 2, "no command given"),
    ("unknown-site", ["--config", "{cfg}", "issue", "nope"], "CertFailoverError", 2,
     "no site named 'nope'"),
    ("ca-not-in-site", ["--config", "{cfg}", "issue", "www", "--ca", "zz"], "CertFailoverError",
     2, "CA 'zz' is not in site www's cas (a, b)"),
    ("no-healthy-standby", ["--config", "{cfg}", "failover", "www"], "InputError", 2,
     "site www has no healthy standby to fail over to"),
    ("unknown-cert", ["--config", "{cfg}", "failover", "www", "--to", "www/a/1"], "InputError",
     2, "no certificate 'www/a/1' for site www"),
    ("unknown-ca-distrust", ["--config", "{cfg}", "distrust", "nope"], "CertFailoverError", 2,
     "'nope' is not a configured [[ca]]"),
    ("import-missing-file", ["--config", "{cfg}", "import", "www", "--ca", "a", "--cert",
                             "{missing}", "--key", "{missing}"], "InputError", 2, "missing.pem"),
]


@pytest.mark.parametrize(("argv", "kind", "code", "words"),
                         [r[1:] for r in JSON_ERRORS], ids=[r[0] for r in JSON_ERRORS])
def test_json_errors_are_one_object_on_stdout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        argv: list[str], kind: str, code: int, words: str) -> None:
    cfg = _config(tmp_path)
    argv = [a.format(cfg=cfg, missing=tmp_path / "missing.pem") for a in argv]
    got, out, err = _run(capsys, ["--json", *argv])
    assert got == code
    error = json.loads(out)["error"]
    assert error["type"] == kind and error["exit_code"] == code, error
    assert words in error["message"]
    assert err == "", "with --json nothing goes to stderr"
    # the same command without --json: `certfailover: error: ...` on stderr, nothing on stdout
    # (with no command at all the help goes to stdout, as before)
    got, out, err = _run(capsys, argv)
    assert got == code
    if words != "no command given":
        assert out == "" and "certfailover: error: " in err and words in err


def test_usage_error_without_json_keeps_argparse_usage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, ["--config", str(_config(tmp_path)), "statu"])
    assert code == 2 and out == ""
    assert err.startswith("usage: certfailover") and "certfailover: error: argument COMMAND" in err


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--json", "--version"])
    assert exc.value.code == 0 and "certfailover" in capsys.readouterr().out


# -- verbosity: quiet by default, -v info, -vv debug with alembic ---------------------------------

VERBOSITY = [
    # (flags, INFO lines from certfailover?, alembic lines?, DEBUG lines?)
    ([], False, False, False),
    (["-v"], True, False, False),
    (["-vv"], True, True, True),
]


@pytest.mark.parametrize(("flags", "info", "alembic", "debug"), VERBOSITY,
                         ids=["quiet", "-v", "-vv"])
def test_verbosity(tmp_path: Path, flags: list[str], info: bool, alembic: bool,
                   debug: bool) -> None:
    """A real process: `issue --ca a` against a closed port fails fast (issue_timeout 1) and the
    engine logs the failed order at info; the store's first open runs alembic."""
    cfg = _config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "certfailover.cli.main", *flags, "--config", str(cfg), "issue",
         "--ca", "a"],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 1, proc.stderr
    assert "FAILED www: issuance failed: could not issue from a" in proc.stdout
    assert ("INFO certfailover.engine: www issuance_failed" in proc.stderr) is info, proc.stderr
    assert ("alembic" in proc.stderr) is alembic, proc.stderr
    assert (" DEBUG " in proc.stderr) is debug, proc.stderr
    if not flags:
        assert " INFO " not in proc.stderr, proc.stderr


def test_logging_levels_are_set_in_process(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_config(tmp_path))
    try:
        for flags, root, alembic in (([], logging.WARNING, logging.WARNING),
                                     (["-v"], logging.INFO, logging.WARNING),
                                     (["-vv"], logging.DEBUG, logging.NOTSET)):
            assert main([*flags, "--config", cfg, "init"]) == 0
            assert logging.getLogger().level == root
            assert logging.getLogger("alembic").level == alembic
        capsys.readouterr()
    finally:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.NOTSET)


# -- demo --workdir: never deletes what it did not create -----------------------------------------

def _foreign(d: Path) -> list[Path]:
    d.mkdir(parents=True)
    (d / "thesis.tex").write_text("years of work")
    (d / "sub").mkdir()
    (d / "sub" / "data.csv").write_text("1,2,3")
    return [d / "thesis.tex", d / "sub" / "data.csv"]


WORKDIRS = [
    # (id, how to make the directory, words in the error)
    ("foreign-dir", "foreign", "is not empty and was not created by certfailover demo"),
    ("a-file", "file", "exists and is not a directory"),
    ("foreign-dir-with-marker-dir", "marker-is-dir", "was not created by certfailover demo"),
]


@pytest.mark.parametrize(("make", "words"), [r[1:] for r in WORKDIRS], ids=[r[0] for r in WORKDIRS])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_demo_refuses_a_workdir_it_did_not_create(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str, words: str,
        as_json: bool) -> None:
    d = tmp_path / "mine"
    kept: list[Path] = []
    if make == "foreign":
        kept = _foreign(d)
    elif make == "file":
        d.write_text("not a directory")
        kept = [d]
    else:
        kept = _foreign(d)
        (d / MARKER).mkdir()  # a directory named like the marker is not the marker
    before = {p: p.read_bytes() for p in kept}
    code, out, err = _run(capsys, [*(["--json"] if as_json else []), "demo", "--workdir", str(d)])
    assert code == 2
    message = json.loads(out)["error"]["message"] if as_json else err
    assert words in message and str(d) in message
    assert {p: p.read_bytes() for p in kept} == before, "nothing in the directory was touched"


def test_demo_workdir_missing_empty_or_its_own(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh" / "deep"
    prepare_workdir(fresh)
    assert [p.name for p in fresh.iterdir()] == [MARKER]
    (fresh / "pebble.log").write_text("old run")
    prepare_workdir(fresh)  # its own: emptied
    assert [p.name for p in fresh.iterdir()] == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_workdir(empty)  # empty: taken, marked
    assert (empty / MARKER).is_file()
    link = tmp_path / "link"
    link.symlink_to(empty)
    with pytest.raises(InputError, match="not a directory"):
        prepare_workdir(link)
    assert (empty / MARKER).is_file()
