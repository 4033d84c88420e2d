"""Checks shared by the presets, phrased in each framework's own argument names."""

from __future__ import annotations

from typing import Any

from rmsprop_jax import validation


def check_common(
    *,
    learning_rate: tuple[str, Any],
    decay: tuple[str, Any],
    eps: tuple[str, Any],
    momentum: tuple[str, Any] | None = None,
    weight_decay: tuple[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
    centered: bool = False,
) -> None:
    """Validates the arguments every RMSProp flavour has, each given as (name, value)."""
    validation.check_scalar_or_schedule(*learning_rate)
    validation.check_interval(*decay, 0.0, 1.0)
    validation.check_interval(*eps, 0.0)
    if momentum is not None and momentum[1] is not None:
        validation.check_interval(*momentum, 0.0, 1.0, high_inclusive=False)
    if weight_decay is not None and weight_decay[1] is not None:
        validation.check_interval(*weight_decay, 0.0)
    for name, value in (flags or {}).items():
        validation.check_bool(name, value)
    if centered and not validation.is_traced(eps[1]) and eps[1] == 0:
        raise ValueError(
            f"Invalid {eps[0]} value: 0.0 (centered needs {eps[0]} > 0: the variance estimate of a constant "
            "gradient is exactly 0)"
        )


def momentum_or_none(momentum: Any) -> Any:
    """The frameworks' ``if momentum > 0`` as a static choice: 0 keeps no buffer.

    A traced momentum (under ``optax.inject_hyperparams``) keeps the buffer.
    """
    if validation.is_traced(momentum) or momentum > 0:
        return momentum
    return None
