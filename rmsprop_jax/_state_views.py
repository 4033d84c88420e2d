"""A state's contents as float32 arrays, and a state moved to another ``state_dtype``.

Public as :func:`rmsprop_jax.state_as_float32` and :func:`rmsprop_jax.convert_state`.
Both read each stored array through the storage its arrays name
(:func:`rmsprop_jax._plan.read`), so they work the same for float, 16-bit and 8-bit states, per
leaf or packed, inside any optax state tree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import core

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _placement as placement
from rmsprop_jax import _plan as plans
from rmsprop_jax import _storage as storage
from rmsprop_jax._layout_protocol import PackingPlan
from rmsprop_jax._state import FIELDS, MU, NU, Field, RmsPropState


def _is_state(x: object) -> bool:
    return isinstance(x, RmsPropState)


def _values(state: RmsPropState, widest: bool = False) -> tuple[plans.StatePlan, dict[Field, list[jax.Array]]]:
    """Each present field's values per leaf, in float32 (``widest``: or the storage's wider dtype),
    ``nu`` as ``E[g^2]`` whatever its plan keeps."""
    plan = plans.read(state)
    stored = plans.field_arrays(state, plan, by_group=False)
    values: dict[Field, list[jax.Array]] = {field: [] for field in stored}
    for index, leaf in enumerate(plan.leaves):
        for field in stored:
            kept = leaf.storages.of(field)
            assert kept is not None
            real = dtypes.compute_dtype(kept.dtype, kept.dtype) if widest else jnp.dtype(jnp.float32)
            dtype = dtypes.like_param(kept.dtype, real) if field.signed else real
            values[field].append(kept.load(stored[field][index], dtype))
        if leaf.storages.nu_holds_variance:  # E[g^2] = var + E[g]^2
            first = values[MU][index]
            values[NU][index] = values[NU][index] + (first.conj() * first).real
    return plan, values


def _view(state: RmsPropState, widest: bool = False) -> RmsPropState:
    plan, values = _values(state, widest)
    fields = {field.name: jax.tree.unflatten(plan.treedef, values[field]) for field in values}
    return RmsPropState(count=state.count, nu=fields["nu"], mu=fields.get("mu"), trace=fields.get("trace"))


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


def _checked_alike(source: RmsPropState, like: RmsPropState) -> tuple[plans.StatePlan, plans.StatePlan]:
    """The two plans; raises unless the states differ in their storage and layout only."""
    for field in FIELDS:
        mine, theirs = getattr(source, field.name), getattr(like, field.name)
        if (mine is None) != (theirs is None):
            raise _structure_error(
                f"the state's {field.name} is {'absent' if mine is None else 'present'}"
                f" but like's is {'absent' if theirs is None else 'present'}"
            )
    plan, like_plan = plans.read(source), plans.read(like)
    if plan.treedef != like_plan.treedef:
        raise _structure_error(f"the params' trees differ:\n  state: {plan.treedef}\n  like: {like_plan.treedef}")
    for index, (mine, theirs) in enumerate(zip(plan.leaves, like_plan.leaves, strict=True)):
        if mine.shape != theirs.shape:
            raise _structure_error(f"leaf {index} has shape {mine.shape} in the state, {theirs.shape} in like")
    return plan, like_plan


def _converted(source: RmsPropState, like: RmsPropState) -> RmsPropState:
    plan, like_plan = _checked_alike(source, like)
    as_stored = plans.field_arrays(source, plan, by_group=False)
    _, values = _values(source, widest=True)
    count = source.count if source.count is not None else like.count
    count = None if like.count is None else count
    seed_count = jnp.zeros([], jnp.int32) if count is None else _uncommitted(count)
    out: dict[str, Any] = {}
    for field in values:
        stored = []
        places = placement.target_shardings(
            plans.group_arrays(like_plan, getattr(like, field.name)), like_plan.groups, len(like_plan.leaves)
        )
        for index, (mine, leaf) in enumerate(zip(plan.leaves, like_plan.leaves, strict=True)):
            if mine.storages == leaf.storages:  # kept alike: moved as it is, nothing re-rounded
                stored.append(as_stored[field][index])
                continue
            value = values[field][index]
            if places[index] is not None and not isinstance(value, core.Tracer):
                value = jax.device_put(value, places[index])  # encoded where the target keeps it
            if field == NU and leaf.storages.nu_holds_variance:  # the planned nu keeps the variance
                mu = values[MU][index]
                value = jnp.maximum(value - (mu.conj() * mu).real, 0)
            kept = leaf.storages.of(field)
            assert kept is not None
            stored.append(kept.store(value, dtypes.rounding_seed(seed_count, index, field.number)))
        out[field.name] = _in_layout(like_plan, stored, getattr(like, field.name))
    return RmsPropState(count=count, nu=out["nu"], mu=out.get("mu"), trace=out.get("trace"))


def _uncommitted(count: jax.Array) -> jax.Array:
    """A concrete step count as an uncommitted scalar, usable beside arrays on any devices."""
    return count if isinstance(count, core.Tracer) else jnp.asarray(np.asarray(count))


def _in_layout(plan: plans.StatePlan, stored: list[storage.Stored], like: Any) -> Any:
    """Per-leaf stored arrays in the plan's layout, placed where ``like``'s arrays are."""
    like_arrays = plans.group_arrays(plan, like)
    groups = plans.gathered(plan, stored)
    placed = [jax.tree.map(placement.placed_like, a, b) for a, b in zip(groups, like_arrays, strict=True)]
    return plans.laid_out(plan, placed, [None] * len(plan.leaves))


def convert_state(state: Any, like: Any) -> Any:
    """``state``'s contents stored as ``like`` stores them: change ``state_dtype`` mid-run.

    Each :class:`rmsprop_jax.RmsPropState` in ``state`` is read as
    :func:`state_as_float32` reads it and written in the storage of the matching state
    in ``like`` (usually ``new_tx.init(params)`` for the optimizer built with the new
    ``state_dtype``): float dtypes (16-bit ones stochastically rounded), or 8-bit
    codes with block scales, and in its layout: per leaf, or packed as the groups
    of ``like`` say (``pack_small_leaves``; a packed ``state`` is read per leaf). The step
    count is kept (``like``'s where ``state`` has none); the rest of the tree comes from
    ``state``. A leaf whose storage does not change is moved as it is (nothing is
    rounded again). Use it to resume a checkpoint with another ``state_dtype`` or layout:
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


def packing_plan(state: Any) -> PackingPlan:
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


def plan_of(state: RmsPropState) -> PackingPlan:
    """The state's packing plan; a per-leaf state's is one group per leaf."""
    return plans.read(state).packing
