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

import jax
import jax.numpy as jnp
import numpy as np
from jax import core

_REAL_TYPES = (int, float, np.integer, np.floating, np.ndarray, jax.Array)


def is_traced(value: object) -> bool:
    """Whether ``value`` is a JAX tracer, whose value is unknown at construction."""
    return isinstance(value, core.Tracer)


def _values(name: str, value: object) -> np.ndarray | None:
    """Returns ``value`` as a float64 array, or ``None`` when it is traced."""
    if is_traced(value):
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, _REAL_TYPES):
        raise ValueError(f"Invalid {name} value: {value!r} ({name} must be a real number)")
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
    """Checks ``low <= value <= high`` (or ``< high``); NaN always fails.

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
    if not np.all((array >= low) & upper_ok):
        closing = "]" if high_inclusive else ")"
        upper = "inf" if math.isinf(high) else f"{high:g}"
        raise ValueError(f"Invalid {name} value: {_describe(value)} ({name} must be in [{low:g}, {upper}{closing})")


def any_equal(value: object, target: float) -> bool:
    """Whether a concrete ``value`` equals ``target`` anywhere; ``False`` when it is traced.

    NumPy only, so that nothing is staged when the optimizer is built under a trace.
    """
    array = _values("value", value)
    return array is not None and bool(np.any(array == target))


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
