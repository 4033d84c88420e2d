"""Where the state's arrays live: every sharding and memory-kind rule of the package, in one place.

**Memory** (``offload_state``). A leaf's state arrays may be kept in host memory (``pinned_host``,
JAX's :class:`jax.memory.Space.Host`), sharded as in device memory (each shard's state in the memory
of the host that holds the shard): ``init`` places them there, and ``update`` brings each one to the
device inside the step (:func:`fetched`) and writes the new one back (:func:`returned`). The params,
gradients and updates stay where they are. On a GPU or TPU that trades device memory (the state's
bytes: 4 per param and state array in float32, about 1.02 in 8 bits) for host traffic (the same
bytes read and written each step); on a CPU both memories are the same RAM. Like a storage, the
placement is read from the arrays themselves (each array's ``jax.typeof(x).memory_space``, which JAX
keeps in the abstract value, under ``jax.jit`` too): the state records nothing else.

**Sharding.** A state array is built from its param so that it carries the param's sharding
(:func:`zeros_sharded_like`; a replicated or one-device param's state is placed directly,
:func:`host_placement`); the packed layout compares the leaves' shardings (:func:`sharding_key`)
and places a stacked group with its members' (:func:`placed_stacked`), reading members at runtime
offsets only where every device holds the anchor (:func:`local_anchor`); the 8-bit codec sees a
shard's extents (:func:`shard_shape`) and reshapes within the sharding on Explicit meshes
(:func:`explicit_spec`, :func:`reshaped`); a converted state is encoded where its target keeps each
leaf (:func:`target_shardings`, :func:`placed_like`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax import core
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax import _validation as validation
from rmsprop_jax._leaf_rules import LeafRule, rule

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


# Sharding rules: what the plan compares, how a stacked group and a reshaped array keep their members'
# sharding, where a shard's extents can be seen.


def sharding_key(leaf: Any) -> tuple | None:
    """What the plan compares of a leaf's sharding, or ``None`` where it cannot be seen."""
    names = compat.sharding_names(leaf)
    value = compat.value_of(leaf)
    if isinstance(value, jax.Array) and not isinstance(value, core.Tracer):
        sharding = value.sharding
        if isinstance(sharding, NamedSharding):
            return ("named", sharding.mesh, _padded(sharding.spec, value.ndim))
        return ("placed", sharding)
    if names is not None:
        mesh = jax.sharding.get_abstract_mesh()
        if not mesh.empty:
            return ("metadata", mesh, _padded(names, jnp.ndim(value)))
    if jax.device_count() == 1:
        return ("single",)
    try:
        sharding = jax.typeof(value).sharding
    except (AttributeError, TypeError):
        return None
    mesh = getattr(sharding, "mesh", None)
    axis_types = getattr(mesh, "axis_types", ())
    if axis_types and all(kind == jax.sharding.AxisType.Explicit for kind in axis_types):
        return ("explicit", mesh, _padded(sharding.spec, jnp.ndim(value)))
    return None


def placed_stacked(stacked: jax.Array, key: tuple | None) -> jax.Array:
    """A group's stacked array with its members' sharding on the new leading axis: ``P(None, *spec)``."""
    if key is None or key[0] not in ("named", "metadata"):
        return stacked  # one device, a single placement, or an Explicit mesh (the stack's type carries it)
    kind, mesh, spec = key
    if kind == "named" and not isinstance(stacked, core.Tracer):
        return jax.device_put(stacked, NamedSharding(mesh, P(None, *spec)))
    return jax.lax.with_sharding_constraint(stacked, P(None, *spec))


def _padded(spec: Any, ndim: int) -> tuple:
    entries = tuple(spec)
    return entries + (None,) * (ndim - len(entries))


def local_anchor(leaf: Any) -> jax.Array | None:
    """``leaf``'s value where every device holds all of it (one device, or replicated), else ``None``.

    :func:`member_offsets` reads one entry of its anchor; of a sharded array that read would be
    a collective (or, on an Explicit mesh, an error), so sharded steps read members at constant
    offsets as before.
    """
    key = sharding_key(leaf)
    if key is None:
        return None
    if key[0] == "single" or (key[0] == "placed" and len(key[1].device_set) == 1):
        return compat.value_of(leaf)
    if key[0] in ("named", "metadata", "explicit") and all(axis is None for axis in key[2]):
        return compat.value_of(leaf)
    return None


def shard_shape(x: jax.Array) -> tuple[int, ...] | None:
    """One shard's shape where ``x``'s sharding can be seen, else ``None``."""
    try:
        if isinstance(x, jax.Array) and not isinstance(x, core.Tracer):
            return tuple(x.sharding.shard_shape(x.shape))  # a concrete array's placement, on any mesh
        return tuple(jax.typeof(x).sharding.shard_shape(x.shape))  # what a tracer shows (Explicit axes)
    except (AttributeError, TypeError, ValueError):
        return None


def explicit_spec(x: jax.Array) -> tuple | None:
    """``x``'s partition spec (one entry per axis) on a mesh with Explicit axes, else ``None``."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not any(kind == AxisType.Explicit for kind in getattr(mesh, "axis_types", ())):
        return None
    spec = tuple(sharding.spec)
    return spec + (None,) * (x.ndim - len(spec))


def reshaped(x: jax.Array, shape: tuple[int, ...], spec: tuple | None) -> jax.Array:
    """``x.reshape(shape)``; on an Explicit mesh with the output sharding spelled out, as JAX requires
    (on ``x``'s own mesh: an eager ``init`` need not run under ``jax.set_mesh``)."""
    if spec is None:
        return x.reshape(shape)
    return jax.lax.reshape(x, shape, out_sharding=NamedSharding(jax.typeof(x).sharding.mesh, P(*spec)))


def target_shardings(arrays: Sequence[Any], groups: Sequence[tuple[int, ...]], leaves: int) -> list[Any]:
    """Each leaf's sharding where it keeps its own concrete array (``arrays``, one stored entry per
    group), else ``None``: where :func:`rmsprop_jax.convert_state` encodes each leaf."""
    from rmsprop_jax import _storage_kinds as kinds  # the kinds place their arrays with this module

    places: list[Any] = [None] * leaves
    for group, stored in zip(groups, arrays, strict=True):
        array = kinds.param_shaped(stored)
        if len(group) == 1 and not isinstance(array, core.Tracer) and getattr(array, "sharding", None) is not None:
            places[group[0]] = array.sharding
    return places


def stand_in(x: Any, shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    """A stand-in of ``shape`` for a stored array ``x`` not shaped like its param (4-bit nibbles), placed
    as ``x`` is where that can be seen (a concrete array's sharding: one spec per axis, as the param's;
    the spec of unit axes ``x`` has after the param's dropped)."""
    concrete = isinstance(x, jax.Array) and not isinstance(x, core.Tracer)
    sharding = x.sharding if concrete else None
    if isinstance(sharding, NamedSharding) and len(sharding.spec) > len(shape):  # unit axes after the param's
        sharding = NamedSharding(
            sharding.mesh, P(*tuple(sharding.spec)[: len(shape)]), memory_kind=sharding.memory_kind
        )
    return jax.ShapeDtypeStruct(shape, x.dtype, sharding=sharding)


def placed_like(value: Any, like: Any) -> Any:
    """``value`` on ``like``'s devices and sharding where ``like`` is a concrete array."""
    if isinstance(like, jax.Array) and not isinstance(like, core.Tracer):
        return jax.device_put(value, like.sharding)
    return value
