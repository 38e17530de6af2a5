"""DNS-01 solver logic without BIND: record names, settings errors, the journal, the command
solver's contract, and bounded failures against servers that do not answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfailover.errors import ConfigError, IssuanceError, TransientIssuanceError
from certfailover.issuers.dns01 import (
    CommandSolver,
    Journal,
    Rfc2136Solver,
    TsigKey,
    challenge_name,
)
from certfailover.issuers.dns_settings import DnsChallenge, make_solver, parse_dns_challenge
from certfailover.tables import Table

SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="  # base64


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    ("identifier", "record"),
    [
        ("example.com", "_acme-challenge.example.com"),
        ("*.example.com", "_acme-challenge.example.com"),  # the CA validates the base name
        ("WWW.Example.COM.", "_acme-challenge.www.example.com"),
        ("*.a.b.example", "_acme-challenge.a.b.example"),
    ],
)
def test_challenge_name(identifier: str, record: str) -> None:
    assert challenge_name(identifier) == record


@pytest.mark.parametrize("bad", ["", "*.", "a.*.example.com", "*.*.example.com", "f*o.example"])
def test_challenge_name_refuses_non_names(bad: str) -> None:
    with pytest.raises(IssuanceError, match="not a name"):
        challenge_name(bad)


# --------------------------------------------------------------------------- settings


def table(**kw: object) -> Table:
    return Table("c.toml", "[[site]] 'www'.challenge", dict(kw))


def parse(env: dict[str, str] | None = None, **kw: object) -> DnsChallenge:
    t = table(**kw)
    out = parse_dns_challenge(t, env=env or {"TSIG": SECRET}, base=Path("/etc/cf"))
    t.check_unknown()
    return out


RFC = {"type": "dns-01-rfc2136", "server": "192.0.2.53:5353", "key_name": "certfailover",
       "key_secret": "env:TSIG"}


def test_rfc2136_settings_and_defaults() -> None:
    d = parse(**RFC)
    assert (d.server, d.key_name, d.key_algorithm, d.nameserver_port, d.ttl) == (
        "192.0.2.53:5353", "certfailover.", "hmac-sha256", 53, 60)
    assert d.key_secret is not None and d.key_secret.value == SECRET
    assert SECRET not in repr(d), "the TSIG secret never shows in a repr"
    solver = make_solver(d, Path("/nonexistent-store"))
    assert SECRET not in repr(solver) and "certfailover." in repr(solver)
    assert parse(**{**RFC, "server": "192.0.2.53"}).server == "192.0.2.53:53"


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"server": None}, "server", "is required"),
        ({"server": "ns1.example.com:53"}, "server", "IP address"),
        ({"server": "192.0.2.1:70000"}, "server", "not a port"),
        ({"key_secret": SECRET}, "key_secret", "must be a reference"),
        ({"key_secret": "env:NOPE"}, "key_secret", "NOPE"),
        ({"key_secret": "env:BAD"}, "key_secret", "not base64"),
        ({"key_algorithm": "hmac-sha3"}, "key_algorithm", "not one of"),
        ({"key_name": None}, "key_name", "is required"),
        ({"timeout": 0}, "timeout", "> 0"),
        ({"propagation_timeout": -1}, "propagation_timeout", "> 0"),
        ({"nameserver_port": 0}, "nameserver_port", "not a port"),
        ({"zone": "*.example.com"}, "zone", "not a zone"),
        ({"bogus": 1}, "bogus", "unknown key"),
    ],
)
def test_rfc2136_settings_errors_name_the_key(change: dict[str, object], key: str,
                                              message: str) -> None:
    kw = {k: v for k, v in {**RFC, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message) as exc:
        parse({"TSIG": SECRET, "BAD": "not base64 !!"}, **kw)
    assert exc.value.where == f"[[site]] 'www'.challenge.{key}"
    assert SECRET not in str(exc.value)


def test_bad_secret_error_names_the_key_not_the_secret() -> None:
    with pytest.raises(ConfigError) as exc:
        parse({"BAD": "no-base64-here!"}, **{**RFC, "key_secret": "env:BAD"})
    assert "certfailover" in str(exc.value) and "no-base64-here" not in str(exc.value)


def test_secret_from_file(tmp_path: Path) -> None:
    f = tmp_path / "tsig"
    f.write_text(SECRET + "\n")
    d = parse(**{**RFC, "key_secret": f"file:{f}"})
    assert d.key_secret is not None and d.key_secret.value == SECRET


def test_command_settings() -> None:
    d = parse(type="dns-01-command", command=["bin/hook", "--zone", "x"], timeout=5)
    assert d.command == ("/etc/cf/bin/hook", "--zone", "x") and d.timeout == 5
    with pytest.raises(ConfigError, match="must not be empty"):
        parse(type="dns-01-command", command=[])
    with pytest.raises(ConfigError, match="unknown key"):
        parse(type="dns-01-command", command=["/bin/true"], server="192.0.2.1")


# ------------------------------------------------------------------ command + journal


HOOK = """#!/bin/sh
# present NAME VALUE / cleanup NAME VALUE against a file "zone": one "NAME VALUE" per line
zone="$(dirname "$0")/zone"
case "$1" in
  present) echo "$2 $3" >> "$zone" ;;
  cleanup) grep -v -x -F "$2 $3" "$zone" > "$zone.new"; mv "$zone.new" "$zone" ;;
  *) echo "unknown action $1" >&2; exit 3 ;;
esac
[ "$CERTFAILOVER_DNS_NAME" = "$2" ] || { echo "env mismatch" >&2; exit 4; }
"""


@pytest.fixture()
def hook(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "hook"
    path.write_text(HOOK)
    path.chmod(0o755)
    (tmp_path / "zone").write_text("")
    yield path


def lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "zone").read_text().splitlines()


def test_command_solver_present_and_cleanup_keep_other_records(tmp_path: Path, hook: Path) -> None:
    journal = Journal(tmp_path / "journal")
    s = CommandSolver([str(hook)], timeout=5, journal=journal)
    end = time.monotonic() + 5
    s.present("*.example.test", "AAAA", deadline=end)
    s.present("example.test", "BBBB", deadline=end)
    assert lines(tmp_path) == ["_acme-challenge.example.test AAAA",
                               "_acme-challenge.example.test BBBB"]
    assert len(journal.entries(s.owner)) == 2
    (tmp_path / "journal").joinpath("x.json").write_text("{broken")  # ignored, not fatal
    s.cleanup("*.example.test", "AAAA")
    assert lines(tmp_path) == ["_acme-challenge.example.test BBBB"]
    assert [e.value for e in journal.entries(s.owner)] == ["BBBB"]
    s.cleanup("example.test", "BBBB")
    assert lines(tmp_path) == [] and journal.entries(s.owner) == []


def test_command_failure_reports_stderr(tmp_path: Path) -> None:
    s = CommandSolver(["/bin/sh", "-c", "echo 'no such zone' >&2; exit 2", "hook"])
    with pytest.raises(IssuanceError, match="exit status 2: no such zone"):
        s.present("example.test", "AAAA", deadline=time.monotonic() + 5)
    with pytest.raises(IssuanceError, match="cannot run"):
        CommandSolver([str(tmp_path / "missing")]).present(
            "example.test", "AAAA", deadline=time.monotonic() + 5)


def test_command_is_killed_at_its_timeout_and_at_the_deadline() -> None:
    s = CommandSolver(["/bin/sh", "-c", "sleep 30", "hook"], timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError, match="killed"):
        s.present("example.test", "AAAA", deadline=time.monotonic() + 10)
    assert time.monotonic() - started < 2
    s = CommandSolver(["/bin/sh", "-c", "sleep 30", "hook"], timeout=30)
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError):
        s.present("example.test", "AAAA", deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 2


def test_leftovers_of_a_gone_process_are_removed_live_ones_kept(tmp_path: Path, hook: Path) -> None:
    journal_dir = tmp_path / "journal"
    # another process presents a record, then stays alive until told to die (like a kill -9)
    code = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from certfailover.issuers.dns01 import CommandSolver, Journal\n"
        f"s = CommandSolver([{str(hook)!r}], journal=Journal(Path({str(journal_dir)!r})))\n"
        "s.present('*.example.test', 'OTHER', deadline=time.monotonic() + 5)\n"
        "print('presented', flush=True)\n"
        "sys.stdin.read()\n"
        "os._exit(9)\n"
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "presented"
        mine = CommandSolver([str(hook)], journal=Journal(journal_dir))
        mine.present("example.test", "MINE", deadline=time.monotonic() + 5)
        # the other process is alive: its record is in flight, not a leftover
        assert mine.clean_leftovers() == 0
        assert lines(tmp_path) == ["_acme-challenge.example.test OTHER",
                                   "_acme-challenge.example.test MINE"]
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait(timeout=30)
    fresh = CommandSolver([str(hook)], journal=Journal(journal_dir))
    assert fresh.clean_leftovers() == 1, "the dead process's record is removed"
    assert lines(tmp_path) == ["_acme-challenge.example.test MINE"]
    assert [(e.value, e.pid) for e in Journal(journal_dir).entries(fresh.owner)] == [
        ("MINE", os.getpid())]
    # a solver also cleans before its first record in a process
    mine.cleanup("example.test", "MINE")
    Journal(journal_dir).add(fresh.owner, "_acme-challenge.gone.test", "GONE")
    entry = Journal(journal_dir).entries(fresh.owner)[0]
    entry.path.write_text(entry.path.read_text().replace(f'"pid": {os.getpid()}',
                                                         f'"pid": {other.pid}'))
    (tmp_path / "zone").write_text("_acme-challenge.gone.test GONE\n")
    CommandSolver([str(hook)], journal=Journal(journal_dir)).present(
        "x.test", "NEW", deadline=time.monotonic() + 5)
    assert lines(tmp_path) == ["_acme-challenge.x.test NEW"]


def test_failed_cleanup_stays_in_the_journal(tmp_path: Path, hook: Path) -> None:
    journal = Journal(tmp_path / "journal")
    s = CommandSolver([str(hook)], journal=journal)
    s.present("example.test", "AAAA", deadline=time.monotonic() + 5)
    hook.write_text("#!/bin/sh\nexit 1\n")
    s.cleanup("example.test", "AAAA")  # never raises
    assert [e.value for e in journal.entries(s.owner)] == ["AAAA"]


def test_an_orders_records_share_one_cleanup_deadline(tmp_path: Path, hook: Path) -> None:
    """A DNS that hangs at cleanup costs the order one cleanup_timeout, not one per record;
    the records it could not remove stay in the journal for the next start."""
    journal = Journal(tmp_path / "journal")
    s = CommandSolver([str(hook)], timeout=30, journal=journal)
    names = ["a.example.test", "b.example.test", "c.example.test"]
    for n in names:
        s.present(n, "V" + n[0], deadline=time.monotonic() + 5)
    hook.write_text("#!/bin/sh\nsleep 30\n")  # the DNS stopped answering
    started = time.monotonic()
    until = started + 1.0
    for n in names:
        s.cleanup(n, "V" + n[0], deadline=until)  # never raises
    assert time.monotonic() - started < 2.0, "three records, one deadline"
    assert sorted(e.value for e in journal.entries(s.owner)) == ["Va", "Vb", "Vc"]


def test_leftovers_are_removed_within_one_budget_at_a_start(tmp_path: Path, hook: Path) -> None:
    journal = Journal(tmp_path / "journal")
    s = CommandSolver([str(hook)], timeout=30, journal=journal)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    for i in range(3):  # added by a process that is gone
        journal.add(s.owner, f"_acme-challenge.n{i}.example.test", f"L{i}")
        entry = next(e for e in journal.entries(s.owner) if e.value == f"L{i}")
        entry.path.write_text(entry.path.read_text().replace(
            f'"pid": {os.getpid()}', f'"pid": {int(gone.stdout)}'))
    hook.write_text("#!/bin/sh\nsleep 30\n")
    s.leftovers_budget, s.cleanup_timeout = 1.0, 5.0
    started = time.monotonic()
    assert s.clean_leftovers() == 0
    assert time.monotonic() - started < 2.0, "bounded by the budget, not 3 x cleanup_timeout"
    assert len(journal.entries(s.owner)) == 3, "kept for the next start"


# -------------------------------------------------------------- RFC 2136, no server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_update_server_fails_at_once_and_transient() -> None:
    s = Rfc2136Solver(f"127.0.0.1:{closed_port()}", TsigKey("k.", SECRET), zone="example.test",
                      timeout=5)
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError, match="add TXT _acme-challenge.example.test"):
        s.present("*.example.test", "AAAA", deadline=time.monotonic() + 10)
    assert time.monotonic() - started < 1


def test_silent_update_server_is_bounded_by_timeout_and_deadline() -> None:
    with socket.socket() as silent:  # accepts TCP (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        s = Rfc2136Solver(f"127.0.0.1:{port}", TsigKey("k.", SECRET), zone="example.test",
                          timeout=0.5)
        started = time.monotonic()
        with pytest.raises(TransientIssuanceError, match="no answer in time"):
            s.present("example.test", "AAAA", deadline=time.monotonic() + 10)
        assert 0.4 < time.monotonic() - started < 1.5
        s = Rfc2136Solver(f"127.0.0.1:{port}", TsigKey("k.", SECRET), zone="example.test",
                          timeout=30)
        started = time.monotonic()
        with pytest.raises(TransientIssuanceError):
            s.present("example.test", "AAAA", deadline=time.monotonic() + 0.5)
        assert time.monotonic() - started < 1.5


def test_name_outside_the_configured_zone() -> None:
    s = Rfc2136Solver("127.0.0.1:53", TsigKey("k.", SECRET), zone="example.test")
    with pytest.raises(IssuanceError, match="not in the configured zone"):
        s.present("www.other.test", "AAAA", deadline=time.monotonic() + 1)


def test_bad_tsig_secret_is_named_by_key() -> None:
    with pytest.raises(IssuanceError, match="TSIG key 'k.'") as exc:
        Rfc2136Solver("127.0.0.1:53", TsigKey("k.", "%%%not-base64"))
    assert "%%%" not in str(exc.value)


# ------------------------------------------------------------- config: wildcards, wiring


def load(tmp_path: Path, domains: list[str], challenge: dict[str, object],
         env: dict[str, str] | None = None) -> object:
    from certfailover import config
    raw = {"store": {"directory": str(tmp_path / "store")},
           "ca": [{"name": "a", "directory": "https://127.0.0.1:9/dir"}],
           "site": [{"name": "www", "domains": domains, "cas": ["a"], "min_standbys": 0,
                     "challenge": challenge}]}
    return config.parse(raw, file="c.toml", base=tmp_path, env=env or {"TSIG": SECRET})


DNS = {**RFC}


def test_wildcard_with_a_dns_challenge(tmp_path: Path) -> None:
    cfg = load(tmp_path, ["Example.TEST", "*.Example.test.", "*.bücher.test"], DNS)
    site = cfg.sites[0]  # type: ignore[attr-defined]
    assert site.domains == ("example.test", "*.example.test", "*.xn--bcher-kva.test")
    assert site.challenge.type == "dns-01-rfc2136"
    assert site.challenge.dns.server == "192.0.2.53:5353"
    assert SECRET not in repr(cfg)


@pytest.mark.parametrize(
    ("domains", "challenge", "where", "message"),
    [
        (["example.test", "*.example.test"], {"type": "http-01-standalone"}, "domains[1]",
         "no challenge that can prove a wildcard"),
        (["*.example.test", "example.test"], DNS, "domains[0]", "SNI"),
        (["example.test", "*.*.example.test"], DNS, "domains[1]", "whole left-most label"),
        (["example.test", "w*.example.test"], DNS, "domains[1]", "whole left-most label"),
        (["example.test", "*.example.test", "*.EXAMPLE.test"], DNS, "domains[2]", "duplicate"),
        (["example.test", "*.exa mple.test"], DNS, "domains[1]", "whitespace"),
        (["example.test"], {**DNS, "key_secret": "env:MISSING"}, "challenge.key_secret",
         "MISSING"),
        (["example.test"], {"type": "dns-01-command"}, "challenge.command", "is required"),
        (["example.test"], {"type": "dns-01-smoke"}, "challenge.type", "dns-01-rfc2136"),
    ],
)
def test_config_errors_name_the_entry(tmp_path: Path, domains: list[str],
                                      challenge: dict[str, object], where: str,
                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        load(tmp_path, domains, challenge)
    assert exc.value.where == f"[[site]] 'www'.{where}"


def test_wiring_builds_a_dns_issuer_per_settings(tmp_path: Path) -> None:
    from certfailover.issuers.acme import AcmeIssuer
    from certfailover.store.vault import Vault
    from certfailover.wiring import issuer_factory
    cfg = load(tmp_path, ["example.test", "*.example.test"], DNS)
    make = issuer_factory(cfg, Vault(cfg.store), cfg.cas["a"])  # type: ignore[arg-type,attr-defined]
    issuer = make(cfg.sites[0])  # type: ignore[attr-defined]
    assert isinstance(issuer, AcmeIssuer) and issuer.challenge_type == "dns-01"
    assert isinstance(issuer.solver, Rfc2136Solver)
    assert issuer.solver.journal is not None
    assert issuer.solver.journal.directory == cfg.store / "dns01"  # type: ignore[attr-defined]
    assert make(cfg.sites[0]) is issuer, "one issuer (and solver) per CA and settings"


def test_zone_lookup_at_a_refusing_server_is_transient() -> None:
    s = Rfc2136Solver(f"127.0.0.1:{closed_port()}", TsigKey("k.", SECRET), timeout=2)
    started = time.monotonic()
    with pytest.raises(TransientIssuanceError, match="finding the zone"):
        s.present("example.test", "AAAA", deadline=time.monotonic() + 5)
    assert time.monotonic() - started < 2.5
