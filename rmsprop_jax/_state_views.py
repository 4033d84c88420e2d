"""A state's contents as float32 arrays, and a state moved to another ``state_dtype``.

Public as :func:`rmsprop_jax.state_as_float32` and :func:`rmsprop_jax.convert_state`.
Both read each stored array through :mod:`rmsprop_jax._storage`, so they work the same
for float, 16-bit and 8-bit states, inside any optax state tree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import core

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _packing as packing
from rmsprop_jax import _storage as storage
from rmsprop_jax import _storage_8bit as codec
from rmsprop_jax._state import RmsPropState

_FIELDS = ("nu", "mu", "trace")


def _is_state(x: object) -> bool:
    return isinstance(x, RmsPropState)


def _float32(stored: storage.Stored, signed: bool, widest: bool) -> jax.Array:
    """A stored array's values in float32 (``widest``: in float32 or its own wider dtype)."""
    stored_dtype = storage.dtype_of(stored)
    real = dtypes.compute_dtype(stored_dtype, stored_dtype) if widest else jnp.dtype(jnp.float32)
    return storage.storage_of(stored, signed).load(stored, dtypes.like_param(stored_dtype, real) if signed else real)


def _per_leaf(state: RmsPropState) -> RmsPropState:
    """``state`` with each packed field unstacked into the params' structure (as stored)."""

    def field(tree: Any) -> Any:
        if isinstance(tree, packing.Packed):
            return jax.tree.unflatten(tree.plan.treedef, packing.unpack(tree))
        return tree

    return RmsPropState(count=state.count, nu=field(state.nu), mu=field(state.mu), trace=field(state.trace))


def _view(state: RmsPropState, widest: bool = False) -> RmsPropState:
    state = _per_leaf(state)

    def leaves(field: str) -> list[storage.Stored]:
        return [storage.as_stored(x) for x in jax.tree.leaves(getattr(state, field), is_leaf=storage.is_stored_leaf)]

    treedef = jax.tree.structure(state.nu, is_leaf=storage.is_stored_leaf)
    nus = leaves("nu")
    mus = leaves("mu") if state.mu is not None else [None] * len(nus)
    nu_view, mu_view = [], []
    for nu, mu in zip(nus, mus, strict=True):
        second = _float32(nu, False, widest)
        if mu is not None:
            first = _float32(mu, True, widest)
            if storage.storage_of(nu, signed=False).lossy:  # nu holds the variance: E[g^2] = var + E[g]^2
                second = second + (first.conj() * first).real
            mu_view.append(first)
        nu_view.append(second)
    trace = state.trace
    return RmsPropState(
        count=state.count,
        nu=jax.tree.unflatten(treedef, nu_view),
        mu=None if state.mu is None else jax.tree.unflatten(treedef, mu_view),
        trace=None
        if trace is None
        else jax.tree.map(
            lambda t: _float32(storage.as_stored(t), True, widest), trace, is_leaf=storage.is_stored_leaf
        ),
    )


def state_as_float32(state: Any) -> Any:
    """Every RMSProp state in ``state`` as float32 arrays shaped like the params.

    Whatever the ``state_dtype`` (float32, 16-bit, or 8-bit codes with block scales),
    each :class:`rmsprop_jax.RmsPropState` in the tree comes back with ``nu`` holding
    ``E[g^2]``, ``mu`` holding ``E[g]`` (centered) and ``trace`` the momentum buffer,
    in float32 (complex64 for the ``mu`` and ``trace`` of complex params), in the
    params' tree structure: for inspection (histograms, logging) and for
    :func:`optax.tree_map_params`-style mapping. The rest of the tree (a chain's other
    states) is returned as it is.

    Args:
      state: An optimizer state: an ``RmsPropState``, or any pytree holding some
        (``optax.chain``'s tuple, ``optax.inject_hyperparams``' state, ...), per
        leaf or packed (``pack_small_leaves=True``).

    Returns:
      The same tree with each ``RmsPropState`` replaced by its float32 view, per
      leaf in the params' structure.

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> tx = rmsprop_jax.rmsprop(0.01, state_dtype="8bit")
      >>> params = {"w": jnp.ones((64, 64))}
      >>> state = tx.init(params)
      >>> _, state = tx.update({"w": jnp.full((64, 64), 2.0)}, state, params)
      >>> view = rmsprop_jax.state_as_float32(state)
      >>> print(view.nu["w"].dtype, view.nu["w"].shape, f"{float(view.nu['w'][0, 0]):.2f}")
      float32 (64, 64) 0.40
    """
    return jax.tree.map(lambda s: _view(s) if _is_state(s) else s, state, is_leaf=_is_state)


def _structure_error(problem: str) -> ValueError:
    return ValueError(
        f"convert_state changes only how a state is stored, not what it holds: {problem}. Build `like` with "
        "the same variant (centered, momentum) and params as the state, e.g. new_tx.init(params)."
    )


def _converted(source: RmsPropState, like: RmsPropState) -> RmsPropState:
    packed_like = like
    like = _per_leaf(like)
    for field in _FIELDS:
        if (getattr(source, field) is None) != (getattr(like, field) is None):
            raise _structure_error(
                f"the state's {field} is {'absent' if getattr(source, field) is None else 'present'}"
                f" but like's is {'absent' if getattr(like, field) is None else 'present'}"
            )
    view = _view(source, widest=True)
    treedef = jax.tree.structure(view.nu)
    like_treedef = jax.tree.structure(like.nu, is_leaf=storage.is_stored_leaf)
    if treedef != like_treedef:
        raise _structure_error(f"the params' trees differ:\n  state: {treedef}\n  like: {like_treedef}")
    count = source.count if source.count is not None else like.count
    count = None if like.count is None else count
    seed_count = jnp.zeros([], jnp.int32) if count is None else count
    targets = {
        field: storage.leaves_of(treedef, getattr(like, field)) for field in _FIELDS if getattr(like, field) is not None
    }
    values = {field: treedef.flatten_up_to(getattr(view, field)) for field in targets}

    def store(field: int, index: int, value: jax.Array, target: storage.Stored) -> storage.Stored:
        if storage.shape_of(target) != value.shape:
            raise _structure_error(
                f"leaf {index} has shape {value.shape} in the state, {storage.shape_of(target)} in like"
            )
        return storage.storage_of(target, signed=field > 0).store(value, dtypes.rounding_seed(seed_count, index, field))

    out: dict[str, list[storage.Stored]] = {}
    for field_index, field in enumerate(_FIELDS):
        if field not in targets:
            continue
        stored = []
        for index, (value, target) in enumerate(zip(values[field], targets[field], strict=True)):
            if field == "nu" and "mu" in values and isinstance(target, codec.Quantized):
                mu = values["mu"][index]
                value = jnp.maximum(value - (mu.conj() * mu).real, 0)  # the 8-bit centered state keeps the variance
            stored.append(store(field_index, index, value, target))
        out[field] = stored

    def rebuilt(field: str) -> Any:
        if field not in out:
            return None
        target = getattr(packed_like, field)
        if not isinstance(target, packing.Packed):
            return jax.tree.unflatten(treedef, out[field])
        repacked = packing.pack(target.plan, out[field])  # placed where like's groups are
        return packing.Packed(
            target.plan, [_placed_like(a, b) for a, b in zip(repacked.groups, target.groups, strict=True)]
        )

    return RmsPropState(count=count, nu=rebuilt("nu"), mu=rebuilt("mu"), trace=rebuilt("trace"))


def _placed_like(value: Any, like: Any) -> Any:
    """``value`` on ``like``'s devices and sharding where ``like`` is a concrete array."""
    if isinstance(like, jax.Array) and not isinstance(like, core.Tracer):
        return jax.device_put(value, like.sharding)
    return value


def convert_state(state: Any, like: Any) -> Any:
    """``state``'s contents stored as ``like`` stores them: change ``state_dtype`` mid-run.

    Each :class:`rmsprop_jax.RmsPropState` in ``state`` is read as
    :func:`state_as_float32` reads it and written in the storage of the matching state
    in ``like`` (usually ``new_tx.init(params)`` for the optimizer built with the new
    ``state_dtype``): float dtypes (16-bit ones stochastically rounded), or 8-bit
    codes with block scales, and in its layout: per leaf, or packed as the groups
    of ``like`` say (``pack_small_leaves``; a packed ``state`` is read per leaf). The step
    count is kept (``like``'s where ``state`` has none); the rest of the tree comes from
    ``state``. Use it to resume a checkpoint with another ``state_dtype`` or layout:
    restore into the old optimizer's state, convert, continue.

    Args:
      state: The optimizer state to convert (any tree holding an ``RmsPropState``).
      like: A state of the same variant and params in the target storage.

    Returns:
      A state with ``like``'s tree, shapes and dtypes and ``state``'s values.

    Raises:
      ValueError: the two states differ in more than their storage (variant,
        params' tree or shapes).

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> params = {"w": jnp.ones((64, 64))}
      >>> old_tx = rmsprop_jax.rmsprop(0.01, momentum=0.9)
      >>> state = old_tx.init(params)
      >>> _, state = old_tx.update({"w": jnp.full((64, 64), 2.0)}, state, params)
      >>> new_tx = rmsprop_jax.rmsprop(0.01, momentum=0.9, state_dtype="8bit")
      >>> state = rmsprop_jax.convert_state(state, new_tx.init(params))
      >>> print(state.nu["w"].codes.dtype, f"{float(rmsprop_jax.state_as_float32(state).nu['w'][0, 0]):.2f}")
      uint8 0.40
    """
    try:
        return jax.tree.map(
            lambda s, target: _converted(s, target) if _is_state(s) else s, state, like, is_leaf=_is_state
        )
    except ValueError as error:
        if "convert_state" in str(error):
            raise
        raise _structure_error(f"the optimizer state trees differ ({error})") from None


def packing_plan(state: Any) -> packing.PackingPlan:
    """Which leaf of the params sits in which stacked group of an RMSProp state.

    With ``pack_small_leaves=True``, ``init`` keeps the state of small same-shape leaves
    stacked in groups; this shows the grouping. Build the state without memory with
    ``jax.eval_shape(tx.init, params)``. A per-leaf state gives one group per leaf.

    Args:
      state: An optimizer state holding exactly one :class:`rmsprop_jax.RmsPropState`
        (a chain's or ``inject_hyperparams``' state will do).

    Returns:
      A :class:`rmsprop_jax.PackingPlan`: ``groups`` (leaf indices per group), ``paths``
      and ``shapes`` (per leaf); ``str(plan)`` lists each group's leaves.

    Raises:
      ValueError: ``state`` holds no ``RmsPropState`` or several.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import rmsprop_jax
      >>> params = {"b1": jnp.zeros(64), "b2": jnp.zeros(64), "w": jnp.zeros((256, 256))}
      >>> tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True)
      >>> print(rmsprop_jax.packing_plan(jax.eval_shape(tx.init, params)))
      group 0: 2 leaves of shape (64,): ['b1'], ['b2']
      group 1: per leaf, shape (256, 256): ['w']
    """
    return plan_of(the_rmsprop_state(state, "packing_plan"))


def the_rmsprop_state(state: Any, what: str) -> RmsPropState:
    """The one :class:`RmsPropState` in ``state``; raises, naming ``what``, when there are none or several."""
    states = [s for s in jax.tree.leaves(state, is_leaf=_is_state) if _is_state(s)]
    if len(states) != 1:
        raise ValueError(
            f"{what} needs a state holding exactly one RmsPropState; this one holds {len(states)} "
            "(pass the RmsPropState you mean)"
        )
    return states[0]


def plan_of(state: RmsPropState) -> packing.PackingPlan:
    """The state's packing plan; a per-leaf state's is one group per leaf."""
    if isinstance(state.nu, packing.Packed):
        return state.nu.plan
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(state.nu, is_leaf=storage.is_stored_leaf)
    return packing.PackingPlan(
        treedef,
        tuple(jax.tree_util.keystr(path) or "<root>" for path, _ in with_paths),
        tuple(storage.shape_of(storage.as_stored(leaf)) for _, leaf in with_paths),
        tuple((index,) for index in range(len(with_paths))),
    )
