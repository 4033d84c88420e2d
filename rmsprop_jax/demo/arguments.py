"""Argument types for the demo's command line and the examples built on it."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from rmsprop_jax.demo.data import DEFAULT_STEPS


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


def add_run_options(parser: argparse.ArgumentParser, *, batch_size: int, batch_size_help: str) -> None:
    """Adds ``--steps``, ``--batch-size`` and ``--seed``, the options every MNIST-1D training script takes."""
    parser.add_argument(
        "--steps",
        type=whole_number_at_least(1),
        default=DEFAULT_STEPS,
        help=f"optimizer steps (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--batch-size",
        type=whole_number_at_least(1),
        default=batch_size,
        help=f"{batch_size_help} (default {batch_size})",
    )
    parser.add_argument(
        "--seed",
        type=whole_number_at_least(0),
        default=0,
        help="seeds initialization, batch order and augmentation; the data itself is fixed (default 0)",
    )
