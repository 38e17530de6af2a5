"""What an operator meets first: `issue` on a real site saying what happened, the lab package
the demo comes from, and the shipped systemd unit.

- `issue` rows run on a lab site (real Pebble CAs, a real nginx; see lab/sitelab.py).
- The lab rows run `certfailover` in a subprocess with the lab (or the test-only packages) hidden
  by a sys.meta_path blocker (what `pip install .` without ./lab leaves out), so no fresh venv and no
  network is needed (~5 s).
- The systemd rows run `systemd-analyze verify` on the shipped unit, its ExecStart pointed at
  this venv's `certfailover` (verify needs the binary to exist); < 2 s.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfailover.cli.main import main
from certfailover_lab.pebble import PebbleCA
from certfailover_lab.ports import free_port
from certfailover_lab.sitelab import Lab, make_lab
from certfailover_lab.sites import LabCAEntry

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "certfailover.service"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _entries(*cas: PebbleCA) -> list[LabCAEntry]:
    return [LabCAEntry(c.name, c.directory_url, c.ca_bundle) for c in cas]


# -- issue says what happened ---------------------------------------------------------------------

@pytest.fixture()
def lab(tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int) -> Iterator[Lab]:
    yield from make_lab(tmp_path, _entries(pebble_a, pebble_b),
                        [pebble_a.root_pem(), pebble_b.root_pem()], http01_port,
                        daemon={"verify_timeout": 2.5})  # a failed proof waits it out


def test_issue_reports_a_failed_first_activation_then_activates(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """README Quickstart step 3: the server does not serve the site yet (here: its endpoint is a
    closed port) -> the certificates are issued, the activation is not verified, exit 1 with the
    reason, live/<site> left in place; once the server serves it, `issue` again activates."""
    cfg = lab.config_path
    good = cfg.read_text()
    cfg.write_text(good.replace(str(lab.nginx.endpoint), f"127.0.0.1:{free_port()}"))
    rows = [
        # (config, argv, exit code, lines that must appear (regex), text that must not)
        ("closed", [], 1, [r"^www: issued www/pebble-b/\w+ from pebble-b",
                           (r"^FAILED www: activation (rolled back|failed): could not activate "
                            r"www/pebble-a/\w+: not verified after 2\.5 s: 127\.0\.0\.1:\d+ \(SNI "
                            r"www\.example\.test\): cannot connect")],
         "nothing to issue"),
        ("good", [], 0, [(r"^www: activated to www/pebble-a/\w+ \(no certificate active yet\); "
                          r"verified by handshake")], "FAILED"),
        ("good", [], 0, [r"^nothing to issue: site www has its certificates$"], "FAILED"),
        ("good", ["--no-activate"], 0, [r"^nothing to issue: site www has its certificates$"],
         "issued"),
    ]
    for which, extra, code, lines, absent in rows:
        cfg.write_text(good if which == "good" else cfg.read_text())
        got, out, err = _run(capsys, "--config", str(cfg), "issue", "www", *extra)
        assert got == code, (which, extra, out, err)
        for line in lines:
            assert re.search(line, out, re.MULTILINE), (line, out)
        assert absent not in out, out
        if which == "closed":
            assert lab.rt.vault.live_target("www") is not None, "live link left for the server"
    assert lab.active().ca == "pebble-a" and lab.served_sha() == lab.active().sha256


def test_issue_reports_a_rollback_with_its_reason(
        tmp_path: Path, pebble_a: PebbleCA, pebble_b: PebbleCA, http01_port: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The server ignores reloads (reload = true): a failover is rolled back. Before this, issue
    printed "nothing to issue" and exited 0."""
    for lab in make_lab(tmp_path, _entries(pebble_a, pebble_b),
                        [pebble_a.root_pem(), pebble_b.root_pem()], http01_port, reload=["true"],
                        daemon={"verify_timeout": 2.5}):
        cfg = str(lab.config_path)
        code, out, _ = _run(capsys, "--config", cfg, "--json", "issue")
        assert code == 0, out
        result = json.loads(out)
        assert [c["ca"] for c in result["issued"]] == ["pebble-b"] and result["failed"] == []
        old = lab.active()
        lab.rt.db.distrust("pebble-a", old.created, "test")
        for as_json in (False, True):
            code, out, err = _run(capsys, "--config", cfg, *(["--json"] if as_json else []),
                                  "issue")
            assert code == 1, (out, err)
            if as_json:
                failed = json.loads(out)["failed"]
                kinds = {f["kind"] for f in failed}
                assert "rollback" in kinds, failed
                rb = next(f for f in failed if f["kind"] == "rollback")
                assert rb["cert"].startswith("www/pebble-b/") and "rolled back" in rb["error"]
            else:
                assert re.search(r"^FAILED www: activation rolled back: could not activate "
                                 r"www/pebble-b/\w+: .*rolled back, previous certificate proven "
                                 r"served", out, re.MULTILINE), out
                assert "nothing to issue" not in out
                assert re.search(r"^\d+ certificate\(s\) issued, \d+ problem\(s\)", out, re.MULTILINE)
        assert lab.active().id == old.id and lab.served_sha() == old.sha256


def test_issue_no_activate_fills_the_site_and_activates_nothing(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """make_lab leaves one certificate from pebble-a, not active: --no-activate orders what the
    site lacks (a standby from pebble-b) and switches nothing."""
    cfg = str(lab.config_path)
    code, out, err = _run(capsys, "--config", cfg, "issue", "--no-activate")
    assert code == 0, (out, err)
    assert re.search(r"^www: issued www/pebble-b/\w+ from pebble-b", out, re.MULTILINE), out
    assert "activated" not in out
    assert all(c.state.value == "standby" for c in lab.rt.db.certs("www"))
    assert {c.ca for c in lab.rt.db.certs("www")} == {"pebble-a", "pebble-b"}
    code, out, _ = _run(capsys, "--config", cfg, "issue", "--no-activate")
    assert code == 0 and out.strip() == "nothing to issue: site www has its certificates"
    code, out, _ = _run(capsys, "--config", cfg, "issue", "--ca", "pebble-b", "--no-activate")
    assert code == 0 and re.search(r"^www: issued www/pebble-b/\w+ from pebble-b", out, re.MULTILINE)
    assert all(c.state.value == "standby" for c in lab.rt.db.certs("www"))


# -- the lab, a separate distribution --------------------------------------------------------------

def _requirements(pyproject: Path, extra: str | None = None) -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {_module(r) for r in reqs}


def _module(requirement: str) -> str:
    name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
    return {"pytest-timeout": "pytest_timeout", "cryptography-vectors": "cryptography_vectors",
            "psycopg": "psycopg"}.get(name, name.replace("-", "_"))


def _hidden(*modules: str) -> str:
    """Python code that makes `modules` (and their submodules) unimportable, as if not installed."""
    return textwrap.dedent(f"""
        import sys
        from importlib.abc import MetaPathFinder
        HIDDEN = {sorted(set(modules))!r}
        class Hide(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HIDDEN:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None
        sys.meta_path.insert(0, Hide())
        for m in [m for m in sys.modules if m.split(".")[0] in HIDDEN]:
            del sys.modules[m]
    """)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)


def _modules(package_dir: Path, package: str) -> list[str]:
    return sorted(package + "." + ".".join(p.relative_to(package_dir).with_suffix("").parts)
                  .removesuffix(".__init__") for p in package_dir.rglob("*.py"))


def test_the_product_imports_nothing_from_the_lab() -> None:
    """No `import certfailover_lab` anywhere in src/certfailover, and every product module imports
    with the lab and its dependencies hidden (what `pip install .` alone leaves)."""
    src = ROOT / "src" / "certfailover"
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in src.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.match(r"\s*(from|import)\s+certfailover_lab\b", line)]
    assert offenders == []
    lab_only = {"certfailover_lab"} | (_requirements(ROOT / "lab" / "pyproject.toml")
                                       - _requirements(ROOT / "pyproject.toml") - {"certfailover"})
    assert "trustme" in lab_only
    modules = [m for m in _modules(src, "certfailover") if not m.endswith("__main__")]
    code = _hidden(*lab_only) + "import importlib\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in modules) + "print('ok')\n"
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_every_lab_module_imports_with_the_product_and_the_lab_dependencies() -> None:
    """Hide what only the test extra brings (pytest, aiosmtpd, ...): every lab module, the demo
    included, still imports, so `pip install . ./lab` is enough for `certfailover demo`."""
    test_only = _requirements(ROOT / "pyproject.toml", "test") - (
        _requirements(ROOT / "pyproject.toml") | _requirements(ROOT / "lab" / "pyproject.toml"))
    assert "pytest" in test_only
    modules = _modules(ROOT / "lab" / "src" / "certfailover_lab", "certfailover_lab")
    assert "certfailover_lab.demo" in modules
    code = _hidden(*test_only) + "import importlib\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in modules) + "print('ok')\n"
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_lab_adds_demo_to_the_cli_through_its_entry_point() -> None:
    proc = _python("from certfailover.cli.main import main\nimport sys\n"
                   "sys.exit(main(['demo', '--help']))\n")
    assert proc.returncode == 0 and "--workdir" in proc.stdout, proc


LAB_MISSING = [
    # (id, modules hidden, argv, exit code, where the message is, words)
    ("lab-absent", ["certfailover_lab"], ["demo", "--workdir", "{tmp}"], 2, "err",
     ("certfailover demo comes with the lab, a separate package: pip install certfailover-lab "
      "(in a checkout: pip install ./lab)")),
    ("lab-dependency-absent", ["trustme"], ["demo", "--workdir", "{tmp}"], 2, "err",
     "cannot be imported: No module named 'trustme'"),
    ("json", ["certfailover_lab"], ["--json", "demo", "--workdir", "{tmp}"], 2, "json",
     "pip install ./lab"),
    ("other-commands-work", ["trustme"], ["--help"], 0, "out", "status"),
]


@pytest.mark.parametrize(("hidden", "argv", "code", "where", "words"),
                         [r[1:] for r in LAB_MISSING], ids=[r[0] for r in LAB_MISSING])
def test_demo_without_the_lab_names_the_package(tmp_path: Path, hidden: list[str],
                                               argv: list[str], code: int, where: str,
                                               words: str) -> None:
    argv = [a.format(tmp=tmp_path / "demo") for a in argv]
    proc = _python(_hidden(*hidden) + "from certfailover.cli.main import main\n"
                   f"sys.exit(main({argv!r}))\n")
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    if where == "json":
        assert words in json.loads(proc.stdout)["error"]["message"]
    else:
        assert words in (proc.stdout if where == "out" else proc.stderr), proc
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "demo").exists(), "nothing created before the lab is there"


# -- the systemd unit -----------------------------------------------------------------------------

def _analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian package `systemd`; `make deps` "
                    "installs it)")
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze cannot run here: {probe.stderr.strip()}")
    return exe


def _settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_settings() -> None:
    s = _settings(UNIT.read_text())
    assert s["UMask"] == ["0022"], "challenge directories must be readable by the web server"
    exec_start = s["ExecStart"][0].split()
    assert exec_start[0] == "/usr/local/bin/certfailover" and exec_start[-1] == "run"
    rw = " ".join(s["ReadWritePaths"]).split()
    assert "/var/lib/certfailover" in rw, "the store"
    assert "-/var/www/acme" in rw, "the README's http-01 webroot"
    assert s["ProtectSystem"] == ["strict"] and s["StateDirectoryMode"] == ["0700"]


UNIT_ROWS = [
    # (id, edit of the shipped unit, what verify must say: "" = nothing at all)
    ("shipped", None, ""),
    ("typo-caught", ("UMask=0022", "UMaks=0022"), "Unknown key 'UMaks'"),
    ("bad-umask-caught", ("UMask=0022", "UMask=0999"), "Failed to parse"),
    ("missing-binary-caught", ("{exe}", "/nonexistent/certfailover"), "is not executable"),
]


@pytest.mark.parametrize(("edit", "says"), [r[1:] for r in UNIT_ROWS], ids=[r[0] for r in UNIT_ROWS])
def test_unit_verifies(tmp_path: Path, edit: tuple[str, str] | None, says: str) -> None:
    analyze = _analyze()
    script = Path(sys.executable).parent / "certfailover"
    assert script.exists(), "the venv's certfailover script"
    exe = tmp_path / "bin" / "certfailover"
    exe.parent.mkdir()
    exe.symlink_to(script)
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/certfailover", f"ExecStart={exe}")
    if edit is not None:
        old, new = (e.format(exe=exe) for e in edit)
        assert old in text
        text = text.replace(old, new)
    unit = tmp_path / "certfailover.service"
    unit.write_text(text)
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False)
    said = (proc.stdout + proc.stderr).strip()
    if not says:
        assert proc.returncode == 0 and said == "", said
    else:
        assert says in said, said
