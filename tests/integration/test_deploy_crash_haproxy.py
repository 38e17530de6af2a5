"""kill -9 trials against real haproxy (the trial logic is in test_deploy_crash.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_deploy_crash import run_kill9_trials, trial_count

pytestmark = pytest.mark.integration


def test_kill9_trials_haproxy(tmp_path: Path) -> None:
    run_kill9_trials("haproxy", trial_count(20), tmp_path)
