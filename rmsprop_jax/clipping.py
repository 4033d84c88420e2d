"""Gradient transforms the framework presets need that optax lacks.

Only Keras's per-variable ``clipnorm`` lives here; value clipping and global-norm
clipping are optax's own (:func:`optax.clip`, :func:`optax.clip_by_global_norm`).
"""

from __future__ import annotations

__all__ = ["clip_by_leaf_norm"]

from typing import Any

import jax
import jax.numpy as jnp
import optax

from rmsprop_jax import _validation as validation


def clip_by_leaf_norm(max_norm: float) -> optax.GradientTransformation:
    """Clips each gradient leaf to an L2 norm of at most ``max_norm``.

    ``g * max_norm / max(||g||, max_norm)`` for every leaf on its own, Keras's
    ``clipnorm``; a zero leaf stays zero.

    Args:
      max_norm: Positive maximum norm of each leaf.

    Returns:
      A stateless :class:`optax.GradientTransformation`.

    Raises:
      ValueError: ``max_norm`` is not a positive number.

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax.clipping import clip_by_leaf_norm
      >>> updates, _ = clip_by_leaf_norm(1.0).update({"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.1])}, None)
      >>> print(updates["a"], updates["b"])
      [0.6 0.8] [0.1]
    """
    validation.check_interval("max_norm", max_norm, 0.0)
    if validation.any_equal(max_norm, 0.0):
        raise ValueError("Invalid max_norm value: 0.0 (max_norm must be > 0)")

    def clip(g: jax.Array) -> jax.Array:
        norm = jnp.sqrt(jnp.sum(jnp.real(g.conj() * g)))
        return g * max_norm / jnp.maximum(norm, max_norm).astype(g.dtype)

    def update_fn(updates: optax.Updates, state: Any, params: optax.Params | None = None) -> tuple[Any, Any]:
        del params
        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)
