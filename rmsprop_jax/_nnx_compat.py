"""Flax NNX at the boundary: every adaptation to ``nnx.Variable`` and NNX's rebuilt states in one place.

The rest of the package sees plain arrays and :class:`~rmsprop_jax._storage_8bit.Quantized`
pairs. NNX reaches it in two ways, and both are undone here:

- ``nnx.Optimizer`` calls ``init`` with a state whose leaves are ``nnx.Variable`` objects
  (one array plus metadata, such as the ``out_sharding`` names of ``nnx.with_partitioning``).
  ``init`` reads each variable's value and metadata (:func:`value_of`, :func:`sharding_names`)
  and wraps each state array back into a variable like its param's (:func:`with_value`,
  :func:`stacked_variable`), so that ``nnx.Optimizer``'s state carries the sharding.
- Each state array is its own variable (an 8-bit leaf's codes and scales are two), so that
  NNX's pure dictionaries hold one array per key.
- Under ``nnx.jit`` NNX may rebuild a ``Quantized`` pair as a mapping with its field names;
  :func:`stored` turns it back.

Flax itself converts at its boundary the same way (``flax.nnx.training.optimizer.to_opt_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rmsprop_jax._state import InGroup
from rmsprop_jax._storage_8bit import Quantized


def is_variable(x: object) -> bool:
    """A framework's variable wrapping one array with metadata (Flax NNX's ``nnx.Variable``)."""
    kind = type(x)
    return all(hasattr(kind, name) for name in ("get_value", "get_metadata", "replace"))


def value_of(x: Any) -> Any:
    """The array a leaf holds (a variable's value, else the leaf itself)."""
    return x.get_value() if is_variable(x) else x


def structure(tree: Any) -> Any:
    """A tree's structure with variables as leaves: the same for NNX's params and its gradients."""
    return jax.tree.structure(tree, is_leaf=is_variable)


def leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    """A tree's leaves (variables whole) with their paths (``jax.tree_util.keystr``)."""
    with_paths = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_variable)[0]
    return [(jax.tree_util.keystr(path) or "<root>", leaf) for path, leaf in with_paths]


def sharding_names(leaf: Any) -> tuple | None:
    """The partition spec a variable's sharding metadata names (``nnx.with_partitioning``), else ``None``."""
    if not is_variable(leaf):
        return None
    names = leaf.get_metadata().get("out_sharding")
    return None if names is None else tuple(names)


def with_value(leaf: Any, value: Any) -> Any:
    """``value`` wrapped as ``leaf`` is: a variable with ``leaf``'s metadata, or ``value`` itself.

    A :class:`~rmsprop_jax._storage_8bit.Quantized` pair becomes a pair of variables: the codes
    with ``leaf``'s metadata, the scales with it where they keep the param's axes (tiles, and
    runs along the last axis; runs over several trailing axes drop the merged axes' names).
    """
    if not is_variable(leaf):
        return value
    if isinstance(value, Quantized):
        names = sharding_names(leaf)
        extra: dict[str, Any] = {}
        if names is not None:
            codes_ndim, scales_ndim = jnp.ndim(value.codes), jnp.ndim(value.scales)
            padded = (*names, *(None,) * (codes_ndim - len(names)))
            kept = padded[: scales_ndim - 1] if scales_ndim < codes_ndim else padded[:scales_ndim]
            extra["out_sharding"] = (*kept, None) if scales_ndim < codes_ndim else kept
        return Quantized(with_value(leaf, value.codes), leaf.replace(value=value.scales, **extra))
    return jax.tree.unflatten(jax.tree.structure(leaf), [value])


def stacked_variable(first_member: Any, stacked: jax.Array) -> Any:
    """A packed group's stacked array wrapped as its first member is, its sharding names gaining the
    group's leading axis (``(None, *names)``)."""
    if not is_variable(first_member):
        return stacked
    names = sharding_names(first_member)
    extra = {} if names is None else {"out_sharding": (None, *names)}
    return first_member.replace(value=stacked, **extra)


def stored(x: Any) -> Any:
    """A state array as the package keeps it: a variable's value, and a ``Quantized`` pair (of
    variables, or a mapping NNX rebuilt under ``nnx.jit``) as a pair of arrays."""
    x = value_of(x)
    if isinstance(x, Quantized):
        return Quantized(value_of(x.codes), value_of(x.scales))
    if isinstance(x, Mapping) and set(x.keys()) == set(Quantized._fields):
        return Quantized(value_of(x["codes"]), value_of(x["scales"]))
    return x


def is_stored_leaf(x: Any) -> bool:
    """One leaf's entry in a state field: an array, a variable, a ``Quantized`` pair (or NNX's
    mapping of one), or a packed leaf's marker."""
    if is_variable(x) or isinstance(x, (Quantized, InGroup)):
        return True
    return isinstance(x, Mapping) and set(x.keys()) == set(Quantized._fields)
