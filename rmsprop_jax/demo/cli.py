"""The demo's command line: ``python -m rmsprop_jax.demo --help``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rmsprop_jax.demo.arguments import add_run_options, positive_float, whole_number_at_least
from rmsprop_jax.demo.data import DEFAULT_BATCH_SIZE, MAX_SHIFT, TRAIN_EXAMPLES
from rmsprop_jax.demo.optimizers import (
    CLIP_NORM,
    DEFAULT_LEARNING_RATE,
    STATE_DTYPES,
    OptimizerChoice,
    rmsprop_choice,
)
from rmsprop_jax.demo.run_directory import check_checkpoint_layout, check_same_run, check_writable
from rmsprop_jax.presets import OPTIMIZERS as PRESETS


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``--help`` documents every option)."""
    parser = argparse.ArgumentParser(
        prog="python -m rmsprop_jax.demo",
        description=(
            "Train a Flax NNX CNN on MNIST-1D (generated locally, no download) with rmsprop_jax "
            f"inside optax.chain(clip_by_global_norm({CLIP_NORM:g}), rmsprop(warm-up + cosine schedule)), "
            f"with random shifts of up to {MAX_SHIFT} samples as augmentation. "
            "Prints the test accuracy and the training time; writes metrics.json and PNG plots."
        ),
    )
    add_run_options(
        parser, batch_size=DEFAULT_BATCH_SIZE, batch_size_help=f"examples per step, at most {TRAIN_EXAMPLES}"
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
        "--state-dtype",
        choices=STATE_DTYPES,
        default="float32",
        help="storage of the optimizer state: float32 (default), bfloat16 (stochastic rounding), 8bit "
        "(block-wise codes for leaves of at least 4096 entries; docs: Numerics, '8-bit state') or 4bit "
        "(its square average in 4 bits; docs: Numerics, '4-bit state')",
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
        help="save params and optimizer state there (Orbax CheckpointManager, one directory per step) and "
        "resume from the latest checkpoint when one exists (default: no checkpoints)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=whole_number_at_least(1),
        default=1000,
        help="steps between checkpoints, with --checkpoint-dir (default 1000)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        type=whole_number_at_least(1),
        default=3,
        help="how many of the latest checkpoints to keep, with --checkpoint-dir (default 3)",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also train optax.adam and optax.sgd baselines on the same budget and plot all "
        "curves in one figure, compare.png",
    )
    return parser


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, OptimizerChoice]:
    """Parses and checks the arguments; on bad input prints usage and one error line, exits 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size > TRAIN_EXAMPLES:
        parser.error(
            f"argument --batch-size: must be at most {TRAIN_EXAMPLES} (the training set size), got {args.batch_size}"
        )
    directories = [("--out", args.out)] + ([("--checkpoint-dir", args.checkpoint_dir)] if args.checkpoint_dir else [])
    for option, directory in directories:
        try:
            check_writable(directory)
        except OSError as error:
            parser.error(f"argument {option}: cannot write to {str(directory)!r}: {error.strerror or error}")
    try:
        choice = rmsprop_choice(args.preset, args.lr, args.steps, args.state_dtype)
    except ValueError as error:
        parser.error(str(error))
    if args.checkpoint_dir is not None:
        settings = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "optimizer": choice.settings}
        try:
            check_checkpoint_layout(args.checkpoint_dir)
            check_same_run(args.checkpoint_dir, settings)
        except ValueError as error:
            parser.error(f"argument --checkpoint-dir: {error}")
    return args, choice


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo; returns the exit status."""
    args, choice = parse_args(argv)
    try:
        from rmsprop_jax.demo import report
        from rmsprop_jax.demo.data import load_mnist1d
        from rmsprop_jax.demo.optimizers import baseline_choices
    except ImportError as error:
        print(
            f"error: the demo needs flax, mnist1d, matplotlib and tqdm ({error}); "
            "install them with: pip install 'rmsprop-jax[demo]'",
            file=sys.stderr,
        )
        return 1
    start = time.perf_counter()
    table = report.state_table(choice, args.seed)
    if table is not None:
        print(f"How {choice.label}'s state keeps each leaf of the network:\n{table}")
    data = load_mnist1d()
    options = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    result = report.train_with_progress(
        choice,
        data,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        **options,
    )
    accuracy = result.history.test_accuracy[-1]
    for step, why in result.damaged_checkpoints:
        print(f"skipped the checkpoint of step {step} in {args.checkpoint_dir}: {why}", file=sys.stderr)
    if result.resumed_from:
        print(f"resumed from the checkpoint of step {result.resumed_from} in {args.checkpoint_dir}")
    elif result.damaged_checkpoints:
        print(f"no readable checkpoint in {args.checkpoint_dir}: started from step 0")
    print(
        f"{choice.label}: test accuracy {accuracy:.4f} after {args.steps} steps, "
        f"trained in {result.history.train_seconds:.1f} s (compilation included)"
    )
    runs = [(choice, result)]
    metrics: dict[str, Any] = {
        **report.run_record(result, choice),
        **options,
        "resumed_from_step": result.resumed_from,
        **report.run_context(result, data),
    }
    if args.compare:
        metrics["baselines"] = {}
        for baseline in baseline_choices(args.steps):
            baseline_result = report.train_with_progress(baseline, data, **options)
            runs.append((baseline, baseline_result))
            metrics["baselines"][baseline.label] = report.run_record(baseline_result, baseline)
            print(
                f"{baseline.label}: test accuracy {baseline_result.history.test_accuracy[-1]:.4f}, "
                f"{baseline_result.history.train_seconds:.1f} s"
            )
    metrics["total_seconds"] = time.perf_counter() - start
    written = report.write_outputs(args.out, metrics, runs, compare=args.compare)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
