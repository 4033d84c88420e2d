"""In CI nothing skips: a missing reference library or a Keras backend other than JAX fails the run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

PROBE = """
from helpers import require, require_keras_on_jax

def test_needs_a_missing_library():
    require("no_such_library_for_rmsprop_jax")

def test_needs_keras_on_jax():
    require_keras_on_jax()
"""


def _pytest(tmp_path, **env) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "KERAS_BACKEND")} | env
    environment["PYTHONPATH"] = str(ROOT / "tests")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(tmp_path)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.slow
def test_in_ci_a_missing_library_and_another_keras_backend_fail(tmp_path):
    run = _pytest(tmp_path, CI="true", KERAS_BACKEND="numpy")
    assert "2 failed" in run.stdout, run.stdout[-3000:]
    assert "cannot import no_such_library_for_rmsprop_jax" in run.stdout
    assert "need KERAS_BACKEND=jax, got 'numpy'" in run.stdout


@pytest.mark.slow
def test_outside_ci_they_skip(tmp_path):
    run = _pytest(tmp_path, KERAS_BACKEND="numpy")
    assert "2 skipped" in run.stdout, run.stdout[-3000:]
