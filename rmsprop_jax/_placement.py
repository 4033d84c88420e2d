"""Where the state's arrays live: device memory, or host memory (``offload_state``).

With ``offload_state`` a leaf's state arrays are kept in host memory (``pinned_host``, JAX's
:class:`jax.memory.Space.Host`), sharded as in device memory (each shard's state in the memory
of the host that holds the shard): ``init`` places them there, and ``update`` brings each one to
the device inside the step (:func:`fetched`) and writes the new one back (:func:`returned`). The
params, gradients and updates stay where they are. On a GPU or TPU that trades device memory
(the state's bytes: 4 per param and state array in float32, about 1.02 in 8 bits) for host
traffic (the same bytes read and written each step); on a CPU both memories are the same RAM.

Like a storage, the placement is read from the arrays themselves (each array's
``jax.typeof(x).memory_space``, which JAX keeps in the abstract value, under ``jax.jit`` too):
the state records nothing else, a restored or converted state steps where its arrays are, and
``update`` needs no option to find them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax import _packing as packing
from rmsprop_jax import _validation as validation
from rmsprop_jax._leaf_rules import LeafRule, rule
from rmsprop_jax._state import InGroup, PackedGroups

HOST = jax.memory.Space.Host
DEVICE = jax.memory.Space.Device

OffloadRule: TypeAlias = bool | Callable[[str, Any], bool] | Any
"""What ``offload_state`` accepts: a bool for every leaf, a pytree prefix of bools, or a callable
``fn(path, param) -> bool``."""


def offload_rule(argument: str, offload_state: OffloadRule) -> LeafRule[bool]:
    """``offload_state`` validated (each entry of a prefix too, naming it)."""

    def check(raw: Any, name: str) -> bool:
        validation.check_bool(name, raw)
        return bool(raw)

    return rule(argument, offload_state, check, lambda x: isinstance(x, (bool, np.bool_)))


def on_host(stored: Any) -> bool:
    """Whether a stored array (or each array of a stored pair) lives in host memory."""
    spaces = {_space(x) for x in jax.tree.leaves(stored)}
    return spaces == {HOST}


def _space(x: Any) -> Any:
    try:
        return jax.typeof(x).memory_space
    except TypeError:  # a NumPy array or a Python number: the device's default memory
        return DEVICE


def fetched(stored: Any) -> Any:
    """A stored array in device memory (moved there inside the step where it lives in host memory)."""
    return jax.tree.map(lambda x: jax.device_put(x, DEVICE) if _space(x) == HOST else x, stored)


def returned(stored: Any, host: bool) -> Any:
    """A new stored array where the old one lived: written back to host memory where it came from there."""
    return jax.tree.map(lambda x: jax.device_put(x, HOST), stored) if host else stored


def offloaded(field: Any, flags: Sequence[bool]) -> Any:
    """A state field in its layout with each flagged leaf's arrays (a stacked group's, by its first
    member's flag) moved to host memory, wrapped as they were (variables, ``Quantized`` pairs)."""
    if not any(flags):
        return field
    per_leaf, stacked = packing.parts(field)
    leaves, treedef = jax.tree_util.tree_flatten(per_leaf, is_leaf=compat.is_stored_leaf)
    moved = [
        leaf if isinstance(leaf, InGroup) or not flag else jax.tree.map(lambda x: jax.device_put(x, HOST), leaf)
        for leaf, flag in zip(leaves, flags, strict=True)
    ]
    tree = jax.tree_util.tree_unflatten(treedef, moved)
    if not stacked:
        return tree
    groups = {
        name: jax.tree.map(lambda x: jax.device_put(x, HOST), array) if flags[packing.members_of(name)[0]] else array
        for name, array in stacked.items()
    }
    return PackedGroups(tree, groups)


def host_placement(param: jax.Array) -> Callable[[tuple[int, ...]], Any] | None:
    """Where a state array of any shape goes for ``param`` on one device or replicated (a function of
    the array's shape), else ``None`` (the state must be sharded as the param is)."""
    sharding = param.sharding
    if not sharding.is_fully_addressable or not sharding.is_fully_replicated:
        return None
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        # an uncommitted param (placed by default) gets an uncommitted state, which jit moves as it does the param
        return lambda shape: sharding if getattr(param, "committed", True) else None
    if isinstance(sharding, NamedSharding):
        return lambda shape: NamedSharding(sharding.mesh, P(), memory_kind=sharding.memory_kind)
    return None


def zeros_sharded_like(param: jax.Array) -> jax.Array:
    """Zeros shaped like ``param`` that keep its sharding, eagerly and under ``jax.jit``.

    They are computed from ``param`` (``|param * 0|``, with the NaN of ``inf * 0`` and
    ``nan * 0`` replaced) so that XLA's sharding propagation gives them ``param``'s
    sharding. A constant such as ``jnp.zeros_like`` has no input to propagate from:
    under ``jax.jit`` on a mesh with Auto axes it lands on one device. The result is
    real (``abs``), exactly +0 everywhere.
    """
    zero = jnp.abs(param * 0)
    return jnp.where(jnp.isnan(zero), jnp.zeros((), zero.dtype), zero)
