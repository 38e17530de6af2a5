"""The post-deploy validator (wiring.ChainValidator) and the trust check judge a chain alike:
what the check fails, the validator refuses; what it passes or cannot know (no data for a
program), the validator accepts (else a switch the checks chose is rolled back every tick)."""

from __future__ import annotations

from datetime import UTC, datetime

from trustpki import Lab, make_intermediate, make_leaf

from certfailover.checks import CheckContext
from certfailover.config import ChallengeConfig, SiteConfig
from certfailover.health import StoreTrustCheck
from certfailover.model import Severity
from certfailover.sitetrust import Program
from certfailover.testing.pki import material
from certfailover.trust import ProgramTrustCheck
from certfailover.wiring import ChainValidator

NOW = datetime(2024, 12, 1, tzinfo=UTC)


def _site(*programs: str) -> SiteConfig:
    return SiteConfig(name="www", domains=("www.example.test",), cas=("a", "b"), server=None,
                      endpoints=(), challenge=ChallengeConfig(),
                      trust=tuple(Program(p) for p in programs))


def test_validator_and_check_agree_per_program(lab: Lab) -> None:
    ica = make_intermediate(lab.entrust, "Served CA")
    leaf = make_leaf(ica, not_before=datetime(2024, 11, 20, tzinfo=UTC),
                     scts=[datetime(2024, 11, 20, tzinfo=UTC)])
    check = ProgramTrustCheck(lab.snap)
    ctx = CheckContext(now=NOW, domains=("www.example.test",),
                       trust=(Program("chrome"), Program("mozilla"), Program("android")))
    verdicts = {f.program: f.severity for f in check.run(material(leaf, [ica.cert]), ctx)
                if f.check == "trust"}
    assert verdicts == {"chrome": Severity.FAIL, "mozilla": Severity.OK,
                        "android": Severity.WARN}  # android: no data in the lab snapshot
    for program, severity in verdicts.items():
        validate = ChainValidator([_site(program)], StoreTrustCheck(), check, lambda: NOW)
        err = validate([leaf, ica.cert], "www.example.test")
        if severity is Severity.FAIL:
            assert err is not None and err.startswith(f"{program}: not trusted"), program
        else:
            assert err is None, (program, err)
