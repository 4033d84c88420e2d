"""Flax NNX at the boundary: every adaptation to ``nnx.Variable`` and NNX's rebuilt states in one place.

The rest of the package sees plain arrays and storage kinds' pairs of arrays (8-bit codes and
scales; :mod:`rmsprop_jax._storage_kinds`). NNX reaches it in two ways, and both are undone here:

- ``nnx.Optimizer`` calls ``init`` with a state whose leaves are ``nnx.Variable`` objects
  (one array plus metadata, such as the ``out_sharding`` names of ``nnx.with_partitioning``).
  ``init`` reads each variable's value and metadata (:func:`value_of`, :func:`sharding_names`)
  and wraps each state array back into a variable like its param's (:func:`with_value`,
  :func:`stacked_variable`), so that ``nnx.Optimizer``'s state carries the sharding.
- Each state array is its own variable (a pair's two arrays are two), so that NNX's pure
  dictionaries hold one array per key.
- Under ``nnx.jit`` NNX may rebuild a pair as a mapping with its field names; :func:`stored`
  turns it back.

Flax itself converts at its boundary the same way (``flax.nnx.training.optimizer.to_opt_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from rmsprop_jax._state import InGroup


def _pair_kind(x: Any) -> Any:
    """The storage kind whose pair ``x`` is (or NNX's mapping of one), else ``None`` (imported here: the
    kinds place their arrays with :mod:`rmsprop_jax._placement`, which reads variables with this module).
    Pairs are tuples and NNX's rebuilt ones mappings: anything else (an array, a variable) is none."""
    if not isinstance(x, (tuple, Mapping)):
        return None
    from rmsprop_jax import _storage_kinds as kinds

    return kinds.pair_kind(x)


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

    A storage kind's pair becomes a pair of variables, each as its kind wraps it (8-bit: the codes
    with ``leaf``'s metadata, the scales with it where they keep the param's axes).
    """
    if not is_variable(leaf):
        return value
    kind = _pair_kind(value)
    if kind is not None:
        return kind.variables(leaf, value, with_value, sharding_names(leaf))
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
    """A state array as the package keeps it: a variable's value, and a pair (of variables, or a
    mapping NNX rebuilt under ``nnx.jit``) as a pair of arrays."""
    x = value_of(x)
    kind = _pair_kind(x)
    if kind is None:
        return x
    fields = x if isinstance(x, Mapping) else x._asdict()
    return kind.pair(**{name: value_of(fields[name]) for name in kind.pair._fields})


def is_stored_leaf(x: Any) -> bool:
    """One leaf's entry in a state field: an array, a variable, a pair (or NNX's mapping of one), or a
    packed leaf's marker."""
    return is_variable(x) or isinstance(x, InGroup) or _pair_kind(x) is not None
