"""A state's contents as float32 arrays, and a state moved to another ``state_dtype``.

Public as :func:`rmsprop_jax.state_as_float32` and :func:`rmsprop_jax.convert_state`.
Both read each stored array through :mod:`rmsprop_jax._storage`, so they work the same
for float, 16-bit and 8-bit states, inside any optax state tree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rmsprop_jax import _dtypes as dtypes
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


def _view(state: RmsPropState, widest: bool = False) -> RmsPropState:
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
        (``optax.chain``'s tuple, ``optax.inject_hyperparams``' state, ...).

    Returns:
      The same tree with each ``RmsPropState`` replaced by its float32 view.

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
    return RmsPropState(
        count=count,
        nu=jax.tree.unflatten(treedef, out["nu"]),
        mu=jax.tree.unflatten(treedef, out["mu"]) if "mu" in out else None,
        trace=jax.tree.unflatten(treedef, out["trace"]) if "trace" in out else None,
    )


def convert_state(state: Any, like: Any) -> Any:
    """``state``'s contents stored as ``like`` stores them: change ``state_dtype`` mid-run.

    Each :class:`rmsprop_jax.RmsPropState` in ``state`` is read as
    :func:`state_as_float32` reads it and written in the storage of the matching state
    in ``like`` (usually ``new_tx.init(params)`` for the optimizer built with the new
    ``state_dtype``): float dtypes (16-bit ones stochastically rounded), or 8-bit
    codes with block scales. The step count is kept (``like``'s where ``state`` has
    none); the rest of the tree comes from ``state``. Use it to resume a checkpoint with
    another ``state_dtype``: restore into the old optimizer's state, convert, continue.

    Args:
      state: The optimizer state to convert (any tree holding ``RmsPropState``s).
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
