"""examples/port_pytorch_steplr.py: the right port of RMSprop + StepLR matches torch; the epoch-as-step one does not."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from helpers import ROOT, load_script, require

port = load_script("examples/port_pytorch_steplr.py")


def test_port_matches_torch_and_the_per_epoch_trap_does_not():
    require("torch")
    theirs = port.train_torch(epochs=30)
    scale = max(float(np.abs(value).max()) for value in theirs.values())
    right = port.max_difference(port.train_jax(port.step_lr_schedule(port.BATCHES_PER_EPOCH), 30), theirs)
    wrong = port.max_difference(port.train_jax(port.step_lr_schedule(1), 30), theirs)
    assert right <= 1e-5 * scale
    assert wrong > 1e-2 * scale


def test_schedule_halves_every_ten_epochs_of_steps():
    schedule = port.step_lr_schedule(8)
    rates = [float(schedule(step)) for step in (0, 79, 80, 159, 160)]
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.005, 0.005, 0.0025], rtol=1e-6)


def test_runs_as_a_script():
    require("torch")
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "port_pytorch_steplr.py"), "--epochs", "12"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "epochs copied as steps" in run.stdout
