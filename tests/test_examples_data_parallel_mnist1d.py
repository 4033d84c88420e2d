"""examples/data_parallel_mnist1d.py: the same training on 1 device, on 8 simulated
devices in one process, and on 2 processes of 4 devices joined by
``jax.distributed.initialize`` (each run in its own processes; this one keeps one device)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, load_script
from jax.sharding import PartitionSpec as P

SCRIPT = ROOT / "examples" / "data_parallel_mnist1d.py"
STEPS = 40
ARGS = ["--steps", str(STEPS), "--batch-size", "64", "--log-every", "20"]


def _load_example():
    return load_script("examples/data_parallel_mnist1d.py")


def _env(devices: int) -> dict[str, str]:
    return os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _run(out: pathlib.Path, devices: int, extra: list[str] = ()) -> subprocess.Popen:
    command = [sys.executable, str(SCRIPT), *ARGS, "--out", str(out), *extra]
    return subprocess.Popen(command, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(run: subprocess.Popen) -> str:
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    return stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    directory = tmp_path_factory.mktemp("data_parallel")
    results = {}
    for name, devices in (("1 device", 1), ("8 devices", 8)):
        stdout = _finish(_run(directory / f"{devices}.json", devices))
        results[name] = json.loads((directory / f"{devices}.json").read_text()) | {"stdout": stdout}
    address = f"localhost:{_free_port()}"
    processes = [
        _run(
            directory / f"process{i}.json",
            4,
            ["--distributed", "--coordinator-address", address, "--num-processes", "2", "--process-id", str(i)],
        )
        for i in range(2)
    ]
    stdouts = [_finish(run) for run in processes]
    assert not (directory / "process1.json").exists()  # only process 0 writes and prints
    assert "test accuracy" not in stdouts[1] and "test accuracy" in stdouts[0]
    results["2 processes x 4 devices"] = json.loads((directory / "process0.json").read_text()) | {"stdout": stdouts[0]}
    return results


@pytest.mark.slow
def test_runs_span_the_devices_and_processes_asked_for(runs):
    assert [(r["devices"], r["processes"]) for r in runs.values()] == [(1, 1), (8, 1), (8, 2)]
    for result in runs.values():
        assert len(result["losses"]) == STEPS and np.all(np.isfinite(result["losses"]))
        assert "test accuracy" in result["stdout"]


@pytest.mark.slow
def test_sharded_runs_train_like_one_device(runs):
    """Same data, same init, same batches: only the order of float32 sums differs."""
    reference = np.asarray(runs["1 device"]["losses"])
    assert reference[-1] < 0.8 * reference[0]  # it trains
    for name in ("8 devices", "2 processes x 4 devices"):
        np.testing.assert_allclose(runs[name]["losses"], reference, rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_params_and_optimizer_state_are_fully_sharded(runs):
    for name in ("8 devices", "2 processes x 4 devices"):
        result = runs[name]
        assert result["state_follows_params"], name
        assert result["conv2_kernel_spec"] == result["conv2_nu_spec"] == str(P(None, None, "data"))
        for kind in ("param_bytes", "state_bytes"):
            busiest, total = result[kind]["busiest_device"], result[kind]["total"]
            assert total == runs["1 device"][kind]["total"]
            assert busiest < total / 8 * 1.01, (name, kind)  # an eighth, plus the replicated 10-element head bias
    one = runs["1 device"]
    assert one["param_bytes"]["busiest_device"] == one["param_bytes"]["total"]


@pytest.mark.slow
def test_the_docs_command_for_8_simulated_devices_runs_verbatim():
    page = (SCRIPT.parents[1] / "docs" / "scaling.md").read_text()
    commands = [c for c in re.findall(r"```bash\n(.*?)\n```", page, re.S) if "data_parallel_mnist1d.py" in c]
    command = next(c for c in commands if c.startswith("XLA_FLAGS=--xla_force_host_platform_device_count=8 "))
    run = subprocess.run(
        command, shell=True, cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", run.stdout).group(1))
    assert accuracy >= 0.95, run.stdout
    assert "8 devices in 1 process(es)" in run.stdout
    assert "every state array follows its parameter: True" in run.stdout


def test_fsdp_spec_splits_the_largest_divisible_dimension():
    example = _load_example()
    assert example.fsdp_spec((5, 1, 64), 8) == P(None, None, "data")
    assert example.fsdp_spec((320, 10), 8) == P("data", None)
    assert example.fsdp_spec((10,), 8) == P()
    assert example.fsdp_spec((10,), 1) == P("data")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "argument --steps: must be at least 1"),
        (["--lr", "-1"], "argument --lr: must be a positive finite number"),
        (["--lr", "inf"], "argument --lr: must be a positive finite number"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["--batch-size", "5000"], "--batch-size must be a multiple of the device count (1) and at most 4000"),
        (["--num-processes", "2"], "need --distributed"),
    ],
)
def test_bad_arguments_exit_with_usage_and_the_reason(argv, message, capsys):
    example = _load_example()
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
