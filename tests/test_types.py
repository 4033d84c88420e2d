"""The package type-checks: pyright in basic mode over rmsprop_jax (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT, require


@pytest.mark.slow
def test_pyright_reports_no_errors():
    require("pyright")
    run = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert '"errorCount": 0' in run.stdout, run.stdout[-5000:] + run.stderr[-2000:]
    assert run.returncode == 0
