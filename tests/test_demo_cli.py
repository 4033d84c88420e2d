"""The main job's command line: ``python -m rmsprop_jax.demo``."""

from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import pytest

from rmsprop_jax._codec_8bit import Quantized
from rmsprop_jax.demo import cli, optimizers
from rmsprop_jax.demo.data import DEFAULT_STEPS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_demo(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmsprop_jax.demo", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "argument --steps: must be at least 1"),
        (["--steps", "2.5"], "argument --steps: expected a whole number"),
        (["--batch-size", "-4"], "argument --batch-size: must be at least 1"),
        (["--batch-size", "4001"], "argument --batch-size: must be at most 4000"),
        (["--seed", "-1"], "argument --seed: must be at least 0"),
        (["--lr", "0"], "argument --lr: must be a positive finite number"),
        (["--lr", "inf"], "argument --lr: must be a positive finite number"),
        (["--preset", "adam"], "argument --preset: invalid choice"),
        (["--state-dtype", "int8"], "argument --state-dtype: invalid choice"),
        (["--preset", "tensorflow_v1"], "preset 'tensorflow_v1' has no default learning rate; give one with --lr"),
        (["--unknown"], "unrecognized arguments: --unknown"),
    ],
)
def test_bad_input_prints_usage_and_one_error_line(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: python -m rmsprop_jax.demo")
    assert err[-1].startswith("python -m rmsprop_jax.demo: error: ") and message in err[-1]


def test_unwritable_out_dir_is_bad_input_without_traceback(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    run = run_demo("--out", str(blocker / "sub"), "--steps", "1")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("python -m rmsprop_jax.demo: error: argument --out: cannot write")
    )


def test_help_explains_every_option():
    help_text = cli.build_parser().format_help()
    for option in ("--steps", "--batch-size", "--seed", "--lr", "--out", "--preset", "--compare", "--state-dtype"):
        assert option in help_text


def test_short_run_with_compare_writes_metrics_and_plots(tmp_path, capsys):
    out = tmp_path / "new" / "dir"
    assert cli.main(["--steps", "40", "--batch-size", "64", "--seed", "3", "--out", str(out), "--compare"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["steps"] == 40 and metrics["seed"] == 3 and metrics["batch_size"] == 64
    assert metrics["train_seconds"] > 0
    assert metrics["optimizer"]["optimizer"] == "rmsprop_jax.rmsprop"
    assert metrics["history"]["eval_steps"][-1] == 40
    assert metrics["history"]["test_accuracy"][-1] == metrics["test_accuracy"]
    assert set(metrics["baselines"]) == set(optimizers.BASELINES)
    for name in ("loss.png", "test_accuracy.png", "compare.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    stdout = capsys.readouterr().out
    assert f"test accuracy {metrics['test_accuracy']:.4f} after 40 steps" in stdout
    # The state report, once, before training: one row per leaf of the network and the total.
    assert stdout.count("state keeps each leaf of the network") == 1
    assert "['conv2']['kernel']  3x64x64" in stdout and "bytes (8.00 per param)" in stdout


@pytest.mark.slow
def test_default_run_reaches_the_accuracy_goal(tmp_path):
    """The main job as the Quickstart runs it: defaults, test accuracy >= 0.95."""
    run = run_demo(cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((tmp_path / "demo_out" / "metrics.json").read_text())
    assert metrics["steps"] == DEFAULT_STEPS and metrics["seed"] == 0
    assert metrics["test_accuracy"] >= 0.95
    assert "test accuracy" in run.stdout


@pytest.mark.slow
def test_a_default_run_with_an_8bit_state_reaches_the_accuracy_goal(tmp_path, capsys):
    """One seed of the 8-bit table (docs, Numerics), with a loose bound (float32 reaches 0.977-0.985)."""
    assert cli.main(["--state-dtype", "8bit", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["optimizer"]["state_dtype"] == "8bit"
    assert metrics["test_accuracy"] >= 0.95


@pytest.mark.parametrize("preset", [None, "pytorch"])
def test_state_dtype_reaches_the_optimizer_and_the_legend(preset, tmp_path):
    args = ["--steps", "4", "--batch-size", "16", "--state-dtype", "8bit", "--out", str(tmp_path)]
    _, choice = cli.parse_args([*args, *(["--preset", preset] if preset else [])])
    assert choice.settings["state_dtype"] == "8bit"
    assert "state_dtype='8bit'" in choice.title
    params = {"w": jnp.zeros((64, 64))}
    assert isinstance(choice.tx.init(params)[1].nu["w"], Quantized)


def test_checkpoint_dir_saves_and_a_second_run_resumes(tmp_path, capsys):
    args = ["--steps", "20", "--batch-size", "32", "--out", str(tmp_path / "out"), "--checkpoint-every", "10"]
    checkpoints = tmp_path / "ckpt"
    assert cli.main([*args, "--checkpoint-dir", str(checkpoints)]) == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["10", "20", "run.json"]
    first = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert first["resumed_from_step"] == 0
    (checkpoints / "20").rename(tmp_path / "20_aside")  # as if stopped after step 10
    assert cli.main([*args, "--checkpoint-dir", str(checkpoints)]) == 0
    second = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert second["resumed_from_step"] == 10 and second["history"]["log_steps"][0] > 10
    assert second["test_accuracy"] == first["test_accuracy"]  # bit-identical parameters
    assert "resumed from the checkpoint of step 10" in capsys.readouterr().out


def test_checkpoint_dir_of_another_run_is_bad_input(tmp_path, capsys):
    args = ["--batch-size", "32", "--out", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert cli.main([*args, "--steps", "5"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*args, "--steps", "6"])
    assert exit_info.value.code == 2
    assert "it holds another run (steps 5 there, 6 now" in capsys.readouterr().err.splitlines()[-1]


def test_unwritable_checkpoint_dir_is_bad_input(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--checkpoint-dir", str(blocker / "sub"), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --checkpoint-dir: cannot write" in capsys.readouterr().err.splitlines()[-1]


def test_checkpoint_dir_in_the_old_layout_is_bad_input(tmp_path, capsys):
    (tmp_path / "ckpt" / "step_1000").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--checkpoint-dir", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "holds checkpoints in the old step_<n> layout (step_1000)" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize(
    "change",
    [
        ("--steps", "6"),
        ("--batch-size", "16"),
        ("--seed", "1"),
        ("--lr", "0.002"),
        ("--preset", "pytorch"),
        ("--state-dtype", "8bit"),
    ],
    ids=lambda change: change if isinstance(change, str) else change[0],
)
def test_resuming_with_any_setting_that_changes_the_run_is_refused(change, tmp_path, capsys):
    """The run's recorded settings decide what resumes: every option that changes the run is refused
    (the checkpoints would not continue it); --out and --compare do not change it."""
    base = ["--steps", "5", "--batch-size", "32", "--checkpoint-dir", str(tmp_path / "ckpt")]
    cli.parse_args([*base, "--out", str(tmp_path / "a")])  # records run.json
    cli.parse_args([*base, "--out", str(tmp_path / "b"), "--compare"])  # the same run
    option, value = change
    changed = [value if i > 0 and base[i - 1] == option else item for i, item in enumerate(base)]
    if option not in base:
        changed += [option, value]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args([*changed, "--out", str(tmp_path / "a")])
    assert exit_info.value.code == 2
    assert "it holds another run (" in capsys.readouterr().err.splitlines()[-1]


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one_and_says_so(tmp_path, capsys):
    args = ["--steps", "20", "--batch-size", "32", "--out", str(tmp_path / "out"), "--checkpoint-every", "10"]
    checkpoints = tmp_path / "ckpt"
    assert cli.main([*args, "--checkpoint-dir", str(checkpoints)]) == 0
    first = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for path in (checkpoints / "20").rglob("*"):  # truncated, as a full disk or a killed copy leaves it
        if (
            path.is_file()
            and path.stat().st_size > 0
            and ("ocdbt.process" in path.as_posix() or path.parent.name == "d")
        ):
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    capsys.readouterr()
    assert cli.main([*args, "--checkpoint-dir", str(checkpoints)]) == 0
    captured = capsys.readouterr()
    assert "skipped the checkpoint of step 20" in captured.err and "cannot be read" in captured.err
    assert "resumed from the checkpoint of step 10" in captured.out
    second = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert second["resumed_from_step"] == 10
    assert second["test_accuracy"] == first["test_accuracy"]  # the same run, from the step before
    assert sorted(p.name for p in checkpoints.iterdir()) == ["10", "20", "run.json"]  # step 20 saved again


def test_memory_does_not_grow_with_the_number_of_steps():
    """The batches are drawn one epoch at a time: a run of 10**12 steps starts as one of 20 does."""
    import tracemalloc

    import rmsprop_jax
    from rmsprop_jax.demo.data import load_mnist1d
    from rmsprop_jax.demo.train import train

    data = load_mnist1d()

    class StopError(Exception):
        pass

    def stop(step, loss, accuracy):
        raise StopError

    peaks = {}
    for steps in (20, 10**12):
        tracemalloc.start()
        with pytest.raises(StopError):
            train(rmsprop_jax.rmsprop(1e-3), data, steps=steps, batch_size=32, log_every=2, on_log=stop)
        peaks[steps] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[10**12] < 2 * peaks[20] + (1 << 20)
