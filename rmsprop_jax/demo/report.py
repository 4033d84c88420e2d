"""What the demo shows and writes: a progress bar while training, metrics.json and the plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
from flax import nnx

import rmsprop_jax
from rmsprop_jax.demo import plots
from rmsprop_jax.demo.data import MAX_SHIFT, Dataset
from rmsprop_jax.demo.model import ConvNet
from rmsprop_jax.demo.optimizers import OptimizerChoice
from rmsprop_jax.demo.train import TrainResult, train


def state_table(choice: OptimizerChoice, seed: int = 0) -> str | None:
    """:func:`rmsprop_jax.state_report` of the optimizer's state for the demo's network (built
    abstractly: nothing is allocated), or ``None`` when the optimizer is not rmsprop_jax's."""
    params = nnx.state(nnx.eval_shape(lambda: ConvNet(rngs=nnx.Rngs(seed))), nnx.Param)
    state = jax.eval_shape(choice.tx.init, params)
    try:
        return str(rmsprop_jax.state_report(state))
    except ValueError:  # a baseline's state holds no RmsPropState
        return None


def train_with_progress(choice: OptimizerChoice, data: Dataset, *, steps: int, **train_options: Any) -> TrainResult:
    """:func:`~rmsprop_jax.demo.train.train` with a tqdm bar showing the loss and running accuracy."""
    from tqdm.auto import tqdm

    with tqdm(total=steps, desc=choice.label, unit="step", dynamic_ncols=True) as bar:

        def on_log(step: int, loss: float, accuracy: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}")

        return train(
            choice.tx,
            data,
            log_every=max(1, min(100, steps // 20)),
            eval_every=max(1, steps // 40),
            on_log=on_log,
            steps=steps,
            **train_options,
        )


def run_record(result: TrainResult, choice: OptimizerChoice) -> dict[str, Any]:
    """One run's entry of metrics.json: accuracy, time, settings and curves."""
    history = result.history
    return {
        "test_accuracy": history.test_accuracy[-1],
        "train_seconds": history.train_seconds,
        "optimizer": choice.settings,
        "title": choice.title,
        "history": {
            "log_steps": history.log_steps,
            "train_loss": history.train_loss,
            "train_accuracy": history.train_accuracy,
            "eval_steps": history.eval_steps,
            "test_accuracy": history.test_accuracy,
        },
    }


def run_context(result: TrainResult, data: Dataset) -> dict[str, Any]:
    """The model, the data and the platform of a run, for metrics.json."""
    return {
        "model": {
            "name": "rmsprop_jax.demo.model.ConvNet",
            "channels": result.model.conv1.out_features,
            "parameters": sum(x.size for x in jax.tree.leaves(nnx.state(result.model, nnx.Param))),
        },
        "data": {
            "name": "MNIST-1D (mnist1d package, default arguments, seed 42)",
            "train_examples": len(data.y_train),
            "test_examples": len(data.y_test),
            "augmentation": f"random shift of up to {MAX_SHIFT} samples",
        },
        "platform": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(device) for device in jax.devices()],
        },
    }


def write_outputs(
    out: Path, metrics: dict[str, Any], runs: list[tuple[OptimizerChoice, TrainResult]], *, compare: bool
) -> list[Path]:
    """Writes metrics.json, loss.png, test_accuracy.png and (``compare``) compare.png; returns the paths.

    ``runs`` starts with the RMSProp run; each curve is labelled with its optimizer's
    :attr:`~rmsprop_jax.demo.optimizers.OptimizerChoice.title`.
    """
    histories = {choice.title: result.history for choice, result in runs}
    main_only = dict(list(histories.items())[:1])
    written = [out / "metrics.json", out / "loss.png", out / "test_accuracy.png"]
    written[0].write_text(json.dumps(metrics, indent=2) + "\n")
    plots.save_loss(written[1], main_only)
    plots.save_test_accuracy(written[2], main_only)
    if compare:
        written.append(out / "compare.png")
        plots.save_comparison(written[-1], histories)
    return written
