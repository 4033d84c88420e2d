"""Construction-time argument checks: a ``ValueError`` naming the argument.

Every check is skipped for traced values (as under ``optax.inject_hyperparams``
inside ``jax.jit``): those cannot be inspected without a host round trip, and the
transformation works with them unchanged. The presets reuse these checks with
their own framework's argument names.

The checks use NumPy and Python only, never ``jax.numpy``: client code builds the
optimizer inside ``jax.jit``, a ``lax.scan`` body or ``jax.eval_shape`` (PureJaxRL's
``train`` does), where a ``jnp`` operation on a Python number is staged into the trace
and its result is a tracer that no ``if`` can read. ``tests/test_client_contexts.py``
checks that building any optimizer stages nothing.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import core

_REAL_TYPES = (int, float, np.integer, np.floating, np.ndarray, jax.Array)


def is_traced(value: object) -> bool:
    """Whether ``value`` is a JAX tracer, whose value is unknown at construction."""
    return isinstance(value, core.Tracer)


def _values(name: str, value: object) -> np.ndarray | None:
    """Returns ``value`` as a float64 scalar array, or ``None`` when it is traced.

    A traced value's shape is known: it must be a scalar too (an array hyperparameter would
    silently become per-entry rates, or broadcast a param to another shape)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (*_REAL_TYPES, core.Tracer)):
        raise ValueError(f"Invalid {name} value: {value!r} ({name} must be a real number)")
    if np.ndim(value) != 0:
        raise ValueError(
            f"Invalid {name} value: an array of shape {np.shape(value)} ({name} must be a scalar: one value "
            "for every entry of every param; use optax.multi_transform for per-leaf values)"
        )
    if is_traced(value):
        return None
    array = np.asarray(value)
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise ValueError(f"Invalid {name} value: {value!r} ({name} must be a real number)")
    return array.astype(np.float64)


def _describe(value: object) -> str:
    array = np.asarray(value)
    return repr(float(array)) if array.ndim == 0 else repr(array.tolist())


def check_interval(
    name: str,
    value: object,
    low: float,
    high: float = math.inf,
    *,
    high_inclusive: bool = True,
) -> None:
    """Checks ``low <= value <= high`` (or ``< high``) and that ``value`` is a finite scalar.

    NaN and infinities always fail: an infinite learning rate, weight decay, eps or initial
    scale gives NaN params, or updates that are 0 for good.

    Args:
      name: The argument's name, as the caller spells it.
      value: A number, a concrete array, or a tracer (not checked).
      low: Smallest allowed value (inclusive).
      high: Largest allowed value.
      high_inclusive: Whether ``high`` itself is allowed.

    Raises:
      ValueError: ``value`` is not a real number or lies outside the interval.
    """
    array = _values(name, value)
    if array is None:
        return
    upper_ok = array <= high if high_inclusive else array < high
    if not np.all((array >= low) & upper_ok & np.isfinite(array)):
        closing = "]" if high_inclusive else ")"
        upper = "inf)" if math.isinf(high) else f"{high:g}{closing}"
        finite = ", finite" if math.isinf(high) else ""
        raise ValueError(f"Invalid {name} value: {_describe(value)} ({name} must be in [{low:g}, {upper}{finite})")


def any_equal(value: object, target: float) -> bool:
    """Whether a concrete ``value`` equals ``target`` anywhere; ``False`` when it is traced.

    NumPy only, so that nothing is staged when the optimizer is built under a trace.
    """
    array = _values("value", value)
    return array is not None and bool(np.any(array == target))


def all_equal(value: object, target: float) -> bool:
    """Whether a concrete ``value`` equals ``target`` everywhere; ``False`` when it is traced."""
    if is_traced(value) or callable(value):
        return False
    try:
        return bool(np.all(np.asarray(value) == target))
    except (TypeError, ValueError):
        return False


def check_bool(name: str, value: object) -> None:
    """Checks that a flag is a bool: a string or a number is not silently truthy."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Invalid {name} value: {value!r} ({name} must be True or False)")


def check_scalar_or_schedule(name: str, value: object) -> None:
    """A learning rate or weight decay: a schedule (callable) passes; a constant
    must be a non-negative number."""
    if callable(value):
        return
    check_interval(name, value, 0.0)


def checked_schedule_value(name: str, value: Any) -> Any:
    """A schedule's value for one step: a scalar (its shape is known where it is traced)."""
    if np.ndim(value) != 0:
        raise ValueError(
            f"Invalid {name} value: the schedule returned an array of shape {np.shape(value)} "
            f"({name} must be a scalar at every step)"
        )
    return value


def raise_if_nonzero(value: object, message: str) -> None:
    """Raises ``ValueError(message)`` when the step runs, if ``value`` (a traced scalar) is not 0.

    For a hyperparameter whose value is known only when the jitted step runs (the arrays of
    ``optax.inject_hyperparams``): a host callback checks it, as Equinox's ``error_if`` does.
    """
    if not is_traced(value):
        if not all_equal(value, 0.0):
            raise ValueError(message)
        return

    def check(concrete: np.ndarray) -> None:
        if np.any(np.asarray(concrete) != 0):
            raise ValueError(message)

    jax.debug.callback(check, value)


def checked_params(params: Any) -> Any:
    """``params`` with a Python float leaf as a float32 array (as ``jnp.zeros_like`` reads it);
    raises a ``TypeError`` naming the first leaf that is not a floating array."""

    from rmsprop_jax import _nnx_compat as compat  # the package's one reading of NNX variables

    def checked(path: tuple, leaf: object) -> object:
        value = compat.value_of(leaf)
        where = jax.tree_util.keystr(path) or "<root>"
        if isinstance(value, float):
            return leaf if compat.is_variable(leaf) else jnp.asarray(value)
        dtype = getattr(value, "dtype", None)
        if dtype is None or not hasattr(value, "shape"):
            what = "a function" if callable(value) else f"a {type(value).__name__}"
            raise TypeError(
                f"Params leaf {where} is {what}, not an array: pass only the arrays to init, e.g. "
                "tx.init(eqx.filter(model, eqx.is_array)) for an Equinox model."
            )
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"Params leaf {where} has dtype {np.dtype(dtype).name}: RMSProp trains floating params only "
                "(leave integer and bool leaves out, e.g. eqx.filter(model, eqx.is_inexact_array), or "
                "wrap the optimizer in optax.masked)."
            )
        return leaf

    return jax.tree_util.tree_map_with_path(checked, params, is_leaf=compat.is_variable)
