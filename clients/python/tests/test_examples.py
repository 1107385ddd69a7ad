"""Each example script runs its walkthrough's queries against the demo and gets the answers
and refusals the walkthrough states (the scripts exit non-zero otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "script, user",
    [
        ("hotline_trends.py", "civil-analyst"),
        ("elderly_care.py", "civil-analyst"),
        ("new_employment.py", "hrss-analyst"),
        ("subsidy_audit.py", "auditor"),
    ],
)
def test_example_script_runs_its_walkthrough(demo, script, user):
    env = dict(os.environ, VEIL_FLIGHT=demo.flight, VEIL_TOKEN=demo.tokens[user])
    done = subprocess.run([sys.executable, script], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit record" in done.stdout, done.stdout
