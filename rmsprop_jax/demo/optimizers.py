"""What the demo trains with: rmsprop_jax (default or a preset) and the ``--compare`` baselines."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import optax

import rmsprop_jax
from rmsprop_jax import presets

DEFAULT_LEARNING_RATE = 1e-3
CLIP_NORM = 1.0
# The default RMSProp's options besides the learning rate.
RMSPROP_OPTIONS: dict[str, Any] = {"decay": 0.99, "eps": 1e-8, "momentum": 0.9, "centered": False}
# Baselines for --compare: the factory, its best peak learning rate on seed 0 from the grid
# {3e-4, 1e-3, 3e-3, 1e-2} (Adam, also 3e-2) and {1e-2, 3e-2, 0.1, 0.3, 1.0} (SGD), docs: Getting started,
# and its other arguments.
BASELINES: dict[str, tuple[Callable[..., optax.GradientTransformation], float, dict[str, Any]]] = {
    "optax.adam": (optax.adam, 1e-2, {}),
    "optax.sgd": (optax.sgd, 0.3, {"momentum": 0.9}),
}


def _as_arguments(options: dict[str, Any]) -> str:
    """``{"momentum": 0.9}`` as written in a call: ``momentum=0.9``."""
    return ", ".join(
        f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}" for name, value in options.items()
    )


@dataclasses.dataclass(frozen=True)
class OptimizerChoice:
    """One optimizer to train with: a label, the transformation and its settings for metrics.json."""

    label: str
    tx: optax.GradientTransformation
    settings: dict[str, Any]
    arguments: str = ""  # the optimizer's non-default arguments, as written in a call

    @property
    def title(self) -> str:
        """One line naming the optimizer and its settings, for plot titles and legends."""
        return (
            f"{self.label}({self.arguments}), peak lr {self.settings['peak_learning_rate']:g}, "
            f"warm-up + cosine, clip {self.settings['clip_by_global_norm']:g}"
        )


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


STATE_DTYPES = ("float32", "bfloat16", "8bit", "4bit")  # --state-dtype: rmsprop_jax.rmsprop's state_dtype


def rmsprop_choice(
    preset: str | None,
    learning_rate: float | None,
    steps: int,
    state_dtype: str = "float32",
    options: dict[str, Any] | None = None,
) -> OptimizerChoice:
    """The demo's RMSProp: the default configuration, or a preset with its own defaults.

    Args:
      preset: A name in :data:`rmsprop_jax.presets.OPTIMIZERS`, or ``None`` for
        :func:`rmsprop_jax.rmsprop` with :data:`RMSPROP_OPTIONS`.
      learning_rate: The schedule's peak, or ``None`` for the default.
      steps: The training steps (the schedule's length).
      state_dtype: The optimizer state's storage, one of :data:`STATE_DTYPES`.
      options: Without a preset, :func:`rmsprop_jax.rmsprop`'s options in place of
        :data:`RMSPROP_OPTIONS` (``benchmarks/demo_8bit.py`` trains plain, momentum
        and centered RMSProp this way).

    Raises:
      ValueError: When the preset has no default learning rate and none is given.
    """
    stored = {} if state_dtype == "float32" else {"state_dtype": state_dtype}
    if preset is None:
        peak = DEFAULT_LEARNING_RATE if learning_rate is None else learning_rate
        chosen = RMSPROP_OPTIONS if options is None else options
        tx = rmsprop_jax.rmsprop(lr_schedule(peak, steps), **chosen, state_dtype=state_dtype)
        return OptimizerChoice(
            "rmsprop_jax.rmsprop",
            _with_clipping(tx),
            {"optimizer": "rmsprop_jax.rmsprop", **chosen, "state_dtype": state_dtype} | _common_settings(peak, steps),
            _as_arguments({**chosen, **stored}),
        )
    lr_name, default = preset_learning_rate(preset)
    peak = default if learning_rate is None else learning_rate
    if peak is None:
        raise ValueError(f"preset {preset!r} has no default learning rate; give one with --lr")
    constructor = getattr(presets, preset)
    tx = constructor(lr_schedule(peak, steps), state_dtype=state_dtype)
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(constructor).parameters.items()
        if name not in (lr_name, "state_dtype") and parameter.default is not inspect.Parameter.empty
    }
    settings = {
        "optimizer": f"rmsprop_jax.presets.{preset}",
        "learning_rate_argument": lr_name,
        **defaults,
        "state_dtype": state_dtype,
    }
    return OptimizerChoice(
        f"presets.{preset}", _with_clipping(tx), settings | _common_settings(peak, steps), _as_arguments(stored)
    )


def baseline_choices(steps: int) -> list[OptimizerChoice]:
    """The ``--compare`` baselines, with the same schedule shape and clipping as RMSProp."""
    return [
        OptimizerChoice(
            label,
            _with_clipping(factory(lr_schedule(peak, steps), **options)),
            {"optimizer": label, **options} | _common_settings(peak, steps),
            _as_arguments(options),
        )
        for label, (factory, peak, options) in BASELINES.items()
    ]
