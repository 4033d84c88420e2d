"""The demo's command line: ``python -m rmsprop_jax.demo --help``."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import optax

import rmsprop_jax
from rmsprop_jax import presets

PRESETS = ("pytorch", "keras", "tensorflow_v1", "timm", "optax", "hinton2012", "graves2013", "dqn2015")
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_STEPS = 4000
DEFAULT_BATCH_SIZE = 100
CLIP_NORM = 1.0
TRAIN_EXAMPLES = 4000
# Baselines for --compare: each one's best peak learning rate on seed 0 from the grid
# {3e-4, 1e-3, 3e-3, 1e-2} (Adam, also 3e-2) and {1e-2, 3e-2, 0.1, 0.3, 1.0} (SGD), README.
BASELINES: dict[str, tuple[Callable[..., optax.GradientTransformation], float]] = {
    "optax.adam": (optax.adam, 1e-2),
    "optax.sgd(momentum=0.9)": (lambda lr: optax.sgd(lr, momentum=0.9), 0.3),
}


@dataclasses.dataclass(frozen=True)
class OptimizerChoice:
    """One optimizer to train with: a label, the transformation and its settings for metrics.json."""

    label: str
    tx: optax.GradientTransformation
    settings: dict[str, Any]


def lr_schedule(peak_learning_rate: float, steps: int) -> optax.Schedule:
    """Linear warm-up from 0 over the first 5% of the steps, then cosine decay to 0."""
    return optax.warmup_cosine_decay_schedule(0.0, peak_learning_rate, steps // 20, steps)


def _with_clipping(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(CLIP_NORM), inner)


def _common_settings(peak_learning_rate: float, steps: int) -> dict[str, Any]:
    return {
        "peak_learning_rate": peak_learning_rate,
        "schedule": "optax.warmup_cosine_decay_schedule (linear warm-up from 0, cosine decay to 0)",
        "warmup_steps": steps // 20,
        "clip_by_global_norm": CLIP_NORM,
    }


def preset_learning_rate(name: str) -> tuple[str, float | None]:
    """The preset's learning-rate argument name and its default (``None`` when it has none)."""
    first = next(iter(inspect.signature(getattr(presets, name)).parameters.values()))
    return first.name, None if first.default is inspect.Parameter.empty else first.default


def rmsprop_choice(preset: str | None, learning_rate: float | None, steps: int) -> OptimizerChoice:
    """The demo's RMSProp: the default configuration, or a preset with its own defaults.

    Raises:
      ValueError: When the preset has no default learning rate and none is given.
    """
    if preset is None:
        peak = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
        options = {"decay": 0.99, "eps": 1e-8, "momentum": 0.9, "centered": False}
        tx = rmsprop_jax.rmsprop(lr_schedule(peak, steps), **options)
        return OptimizerChoice(
            "rmsprop_jax.rmsprop",
            _with_clipping(tx),
            {"optimizer": "rmsprop_jax.rmsprop", **options} | _common_settings(peak, steps),
        )
    lr_name, default = preset_learning_rate(preset)
    peak = default if learning_rate is None else learning_rate
    if peak is None:
        raise ValueError(f"preset {preset!r} has no default learning rate; give one with --lr")
    constructor = getattr(presets, preset)
    tx = constructor(lr_schedule(peak, steps))
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(constructor).parameters.items()
        if name != lr_name and parameter.default is not inspect.Parameter.empty
    }
    settings = {"optimizer": f"rmsprop_jax.presets.{preset}", "learning_rate_argument": lr_name, **defaults}
    return OptimizerChoice(f"presets.{preset}", _with_clipping(tx), settings | _common_settings(peak, steps))


def baseline_choices(steps: int) -> list[OptimizerChoice]:
    """The ``--compare`` baselines, with the same schedule shape and clipping as RMSProp."""
    return [
        OptimizerChoice(
            label,
            _with_clipping(factory(lr_schedule(peak, steps))),
            {"optimizer": label} | _common_settings(peak, steps),
        )
        for label, (factory, peak) in BASELINES.items()
    ]


def whole_number_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a positive finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``--help`` documents every option)."""
    parser = argparse.ArgumentParser(
        prog="python -m rmsprop_jax.demo",
        description=(
            "Train a Flax NNX CNN on MNIST-1D (generated locally, no download) with rmsprop_jax "
            "inside optax.chain(clip_by_global_norm(1.0), rmsprop(warm-up + cosine schedule)). "
            "Prints the test accuracy and the training time; writes metrics.json and PNG plots."
        ),
    )
    parser.add_argument(
        "--steps",
        type=whole_number_at_least(1),
        default=DEFAULT_STEPS,
        help=f"optimizer steps (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--batch-size",
        type=whole_number_at_least(1),
        default=DEFAULT_BATCH_SIZE,
        help=f"examples per step, at most {TRAIN_EXAMPLES} (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--seed",
        type=whole_number_at_least(0),
        default=0,
        help="seeds initialization, batch order and augmentation; the data itself is fixed (default 0)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help=f"peak learning rate of the schedule (default {DEFAULT_LEARNING_RATE}, "
        "or the preset's own default with --preset)",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default=None,
        help="train with a framework or paper preset and its defaults (rmsprop_jax.presets); "
        "tensorflow_v1, optax and hinton2012 have no default learning rate and need --lr",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo_out"),
        help="directory for metrics.json and the plots, created if missing (default ./demo_out)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="save params and optimizer state there (step_<n>, with Orbax) and resume from the latest "
        "checkpoint when one exists (default: no checkpoints)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=whole_number_at_least(1),
        default=1000,
        help="steps between checkpoints, with --checkpoint-dir (default 1000)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also train optax.adam and optax.sgd baselines on the same budget and plot all "
        "curves in one figure, compare.png",
    )
    return parser


def _check_writable(parser: argparse.ArgumentParser, option: str, directory: Path) -> None:
    """Creates ``directory`` if needed; a usage error (exit 2) when it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        parser.error(f"argument {option}: cannot write to {str(directory)!r}: {error.strerror or error}")


def _check_same_run(parser: argparse.ArgumentParser, args: argparse.Namespace, choice: OptimizerChoice) -> None:
    """Records the run's settings in ``run.json`` of the checkpoint directory; a usage error
    when the directory holds a run with other settings (its checkpoints would not resume it)."""
    settings = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "optimizer": choice.settings}
    record = args.checkpoint_dir / "run.json"
    if record.exists():
        saved = json.loads(record.read_text())
        if saved != json.loads(json.dumps(settings)):
            differences = ", ".join(
                f"{key} {saved.get(key)!r} there, {value!r} now"
                for key, value in json.loads(json.dumps(settings)).items()
                if saved.get(key) != value
            )
            parser.error(f"argument --checkpoint-dir: it holds another run ({differences}); use a new directory")
    else:
        record.write_text(json.dumps(settings, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, OptimizerChoice]:
    """Parses and checks the arguments; on bad input prints usage and one error line, exits 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size > TRAIN_EXAMPLES:
        parser.error(
            f"argument --batch-size: must be at most {TRAIN_EXAMPLES} (the training set size), got {args.batch_size}"
        )
    _check_writable(parser, "--out", args.out)
    if args.checkpoint_dir is not None:
        _check_writable(parser, "--checkpoint-dir", args.checkpoint_dir)
    try:
        choice = rmsprop_choice(args.preset, args.lr, args.steps)
    except ValueError as error:
        parser.error(str(error))
    if args.checkpoint_dir is not None:
        _check_same_run(parser, args, choice)
    return args, choice


def _train_with_progress(choice: OptimizerChoice, args: argparse.Namespace, data: Any, *, main: bool) -> Any:
    """Trains with a progress bar; only the main (RMSProp) run checkpoints."""
    from tqdm.auto import tqdm

    from rmsprop_jax.demo.train import train

    with tqdm(total=args.steps, desc=choice.label, unit="step", dynamic_ncols=True) as bar:

        def on_log(step: int, loss: float, accuracy: float) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}")

        return train(
            choice.tx,
            data,
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            log_every=max(1, min(100, args.steps // 20)),
            eval_every=max(1, args.steps // 40),
            on_log=on_log,
            checkpoint_dir=args.checkpoint_dir if main else None,
            checkpoint_every=args.checkpoint_every,
        )


def _run_record(result: Any, choice: OptimizerChoice) -> dict[str, Any]:
    history = result.history
    return {
        "test_accuracy": history.test_accuracy[-1],
        "train_seconds": history.train_seconds,
        "optimizer": choice.settings,
        "history": {
            "log_steps": history.log_steps,
            "train_loss": history.train_loss,
            "train_accuracy": history.train_accuracy,
            "eval_steps": history.eval_steps,
            "test_accuracy": history.test_accuracy,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo; returns the exit status."""
    args, choice = parse_args(argv)
    try:
        from flax import nnx

        from rmsprop_jax.demo import plots
        from rmsprop_jax.demo.data import load_mnist1d
    except ImportError as error:
        print(
            f"error: the demo needs flax, mnist1d, matplotlib and tqdm ({error}); "
            "install them with: pip install 'rmsprop-jax[demo]'",
            file=sys.stderr,
        )
        return 1
    start = time.perf_counter()
    data = load_mnist1d()
    result = _train_with_progress(choice, args, data, main=True)
    accuracy = result.history.test_accuracy[-1]
    if result.resumed_from:
        print(f"resumed from the checkpoint of step {result.resumed_from} in {args.checkpoint_dir}")
    print(
        f"{choice.label}: test accuracy {accuracy:.4f} after {args.steps} steps, "
        f"trained in {result.history.train_seconds:.1f} s (compilation included)"
    )
    runs = {choice.label: result.history}
    metrics: dict[str, Any] = {
        **_run_record(result, choice),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "resumed_from_step": result.resumed_from,
        "model": {
            "name": "rmsprop_jax.demo.model.ConvNet",
            "channels": result.model.conv1.out_features,
            "parameters": sum(x.size for x in jax.tree.leaves(nnx.state(result.model, nnx.Param))),
        },
        "data": {
            "name": "MNIST-1D (mnist1d package, default arguments, seed 42)",
            "train_examples": len(data.y_train),
            "test_examples": len(data.y_test),
            "augmentation": "random shift of up to 2 samples",
        },
        "platform": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "devices": [str(device) for device in jax.devices()],
        },
    }
    if args.compare:
        metrics["baselines"] = {}
        for baseline in baseline_choices(args.steps):
            baseline_result = _train_with_progress(baseline, args, data, main=False)
            runs[baseline.label] = baseline_result.history
            metrics["baselines"][baseline.label] = _run_record(baseline_result, baseline)
            print(
                f"{baseline.label}: test accuracy {baseline_result.history.test_accuracy[-1]:.4f}, "
                f"{baseline_result.history.train_seconds:.1f} s"
            )
    metrics["total_seconds"] = time.perf_counter() - start
    written = [args.out / "metrics.json", args.out / "loss.png", args.out / "test_accuracy.png"]
    written[0].write_text(json.dumps(metrics, indent=2) + "\n")
    plots.save_loss(written[1], {choice.label: result.history})
    plots.save_test_accuracy(written[2], {choice.label: result.history})
    if args.compare:
        written.append(args.out / "compare.png")
        plots.save_comparison(written[-1], runs)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
