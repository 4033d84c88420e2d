"""The per-leaf step traced once per kind of leaf, not once per leaf.

Inside a jitted training step every ``jnp`` operator is itself a small jitted function, whose
call JAX infers afresh each time (about 0.1 ms); a model with a thousand leaves pays that for
each operator of each leaf, which made tracing our step slower than optax's. :func:`leaf_steps`
jits :func:`~rmsprop_jax._leaf_update.update_leaf` with everything static bound (the
configuration, the leaf's storages, a learning rate and weight decay that are Python numbers)
as a function of its own, ``rmsprop_leaves``, that steps :data:`CHUNK` leaves of one kind
(storages, shapes and dtypes): JAX traces it once per kind and chunk length, lowers it once,
and the step calls it once per chunk. XLA inlines the calls before it optimizes, so the
compiled step is the one tracing each leaf would give, and its results are too
(``tests/test_trajectories.py`` holds them bit for bit).

Why chunks rather than one call per leaf: each call site costs XLA the passes that run before
it inlines calls (flattening the call graph clones the callee per site; the verifier and
simplifiers then walk every clone), about 0.3-0.45 ms per site at 1024 sites. With a call per
leaf the compile took 1.2x optax's at 1024 leaves; 16 leaves per call leave 64 sites there,
and both the trace and the compile are at or under optax's (``benchmarks/NOTES.md``, "Trace and
compile: 16 leaves per call").

Outside a trace (an eager ``update``) and with hyperparameters that are arrays in the
configuration (they cannot be static) it calls ``update_leaf`` directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax import core

from rmsprop_jax._leaf_update import LeafStep, RmsConfig, Seeds, update_leaf
from rmsprop_jax._storage_protocol import LeafStorages, Stored

CHUNK = 16
"""Leaves of one kind per call of the jitted step."""

_ARGUMENT = "an argument"
"""The static stand-in of a learning rate or weight decay that is an array: it is passed at the call."""

Arguments = tuple[jax.Array, Stored, Stored | None, Stored | None, jax.Array | None, Seeds]
"""One leaf's ``(grad, nu, mu, trace, param, seeds)``."""

Scalars = tuple[Any, Any, jax.Array | None]
"""The step's ``(learning rate, this leaf's weight decay or None, count)``."""


def _static(value: Any) -> Any:
    """A Python number (or ``None``) as it is; anything else is passed as an argument."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    return _ARGUMENT


def _leaf_function(config: RmsConfig, storages: LeafStorages, learning_rate: Any, weight_decay: Any) -> Callable:
    """``update_leaf`` with the static parts bound; an array learning rate or weight decay is an argument."""

    def rmsprop_leaf(arguments: Arguments, count: Any, dynamic_lr: Any, dynamic_weight_decay: Any) -> LeafStep:
        grad, nu, mu, trace, param, seeds = arguments
        return update_leaf(
            config,
            grad,
            nu,
            mu,
            trace,
            storages=storages,
            param=param,
            learning_rate=dynamic_lr if learning_rate is _ARGUMENT else learning_rate,
            weight_decay=dynamic_weight_decay if weight_decay is _ARGUMENT else weight_decay,
            count=count,
            rounding_seeds=seeds,
        )

    return rmsprop_leaf


@functools.lru_cache(maxsize=256)
def _jitted(config: RmsConfig, storages: LeafStorages, learning_rate: Any, weight_decay: Any) -> Callable:
    """The jitted ``rmsprop_leaves`` of one static part: the step of each leaf of a chunk."""
    step = _leaf_function(config, storages, learning_rate, weight_decay)

    def rmsprop_leaves(chunk: tuple[Arguments, ...], count: Any, lr: Any, weight_decay: Any) -> list[LeafStep]:
        return [step(arguments, count, lr, weight_decay) for arguments in chunk]

    return jax.jit(rmsprop_leaves)


def _kind(config: RmsConfig, storages: LeafStorages, scalars: Scalars, arguments: Arguments) -> tuple | None:
    """What leaves that share one traced function have in common; ``None`` where it cannot be
    static (arrays in the configuration) or the step is not being traced (an eager update)."""
    if not isinstance(arguments[0], core.Tracer):
        return None
    arrays, structure = jax.tree.flatten(arguments)
    types = tuple((x.shape, x.dtype, jax.typeof(x).weak_type) for x in arrays)
    key = (storages, _static(scalars[0]), _static(scalars[1]), structure, types)
    try:
        hash((config, key))
    except TypeError:
        return None
    return key


def leaf_steps(config: RmsConfig, requests: Sequence[tuple[LeafStorages, Scalars, Arguments]]) -> list[LeafStep]:
    """:func:`update_leaf` of each ``(storages, scalars, arguments)``: under a trace, leaves of one
    kind go :data:`CHUNK` at a time through one jitted function."""
    steps: list[LeafStep | None] = [None] * len(requests)
    kinds: dict[tuple, list[int]] = {}
    for index, (storages, scalars, arguments) in enumerate(requests):
        kind = _kind(config, storages, scalars, arguments)
        if kind is None:
            lr, weight_decay, count = scalars
            step = _leaf_function(config, storages, _static(lr), _static(weight_decay))
            steps[index] = step(arguments, count, lr, weight_decay)
        else:
            kinds.setdefault(kind, []).append(index)
    for (storages, static_lr, static_weight_decay, *_), indices in kinds.items():
        lr, weight_decay, count = requests[indices[0]][1]
        step = _jitted(config, storages, static_lr, static_weight_decay)
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start : start + CHUNK]
            outputs = step(tuple(requests[i][2] for i in chunk), count, lr, weight_decay)
            for index, output in zip(chunk, outputs, strict=True):
                steps[index] = output
    return steps  # pyright: ignore[reportReturnType]  (every index is filled above)


def leaf_step(config: RmsConfig, storages: LeafStorages, scalars: Scalars, *arguments: Any) -> LeafStep:
    """:func:`update_leaf` of one leaf (positional arrays, for ``jax.vmap`` over a stacked group)."""
    grad, nu, mu, trace, param, seeds = arguments
    return leaf_steps(config, [(storages, scalars, (grad, nu, mu, trace, param, seeds))])[0]
