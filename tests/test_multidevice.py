"""Starts the 8-device tests (``tests/multidevice``) in their own pytest process with 8 simulated
CPU devices, and shows that run's own report, tracebacks included, when something fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import EIGHT_DEVICES
from helpers import ROOT


@pytest.mark.slow
def test_the_8_device_tests_pass():
    environment = {**os.environ, "XLA_FLAGS": EIGHT_DEVICES, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "pytest", "tests/multidevice", "-q", "-p", "no:cacheprovider", "-rfE"]
    # No time limit: on a loaded machine a limit cut the run short with nothing to show for it.
    run = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    assert run.returncode == 0, f"the 8-device run failed:\n{run.stdout[-30000:]}\n{run.stderr[-3000:]}"
    assert " passed" in run.stdout.splitlines()[-1]
