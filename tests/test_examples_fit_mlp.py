"""examples/fit_mlp.py runs and learns."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT, load_script

example = load_script("examples/fit_mlp.py")


def test_example_fits_the_curve():
    result = example.train(steps=600, seed=1)
    assert result["final_loss"] < 0.05 * result["initial_loss"]


def test_example_runs_as_a_script():
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "fit_mlp.py"), "--steps", "50"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "final loss" in run.stdout


def test_example_rejects_non_positive_steps():
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--steps", "0"])
    assert exit_info.value.code == 2
