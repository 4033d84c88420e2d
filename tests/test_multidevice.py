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
@pytest.mark.timeout(3000)
def test_the_8_device_tests_pass():
    environment = {**os.environ, "XLA_FLAGS": EIGHT_DEVICES, "JAX_PLATFORMS": "cpu"}
    # Each test of that run has its own limit: one that hangs prints every thread's stack and
    # ends the run, which is reported here (alone the run takes about 5 minutes, 7 beside the suite).
    limits = ["-o", "timeout=300", "-o", "timeout_method=thread"]
    command = [sys.executable, "-m", "pytest", "tests/multidevice", "-q", "-p", "no:cacheprovider", "-rfE", *limits]
    try:
        run = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=2700)
    except subprocess.TimeoutExpired as expired:
        output = f"{_text(expired.stdout)[-20000:]}\n{_text(expired.stderr)[-20000:]}"
        pytest.fail(f"the 8-device run took over 45 minutes:\n{output}")
    assert run.returncode == 0, f"the 8-device run failed:\n{run.stdout[-30000:]}\n{run.stderr[-20000:]}"
    assert " passed" in run.stdout.splitlines()[-1]


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
