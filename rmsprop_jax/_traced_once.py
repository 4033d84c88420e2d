"""The per-leaf step traced once per kind of leaf, not once per leaf.

Inside a jitted training step every ``jnp`` operator is itself a small jitted function, whose
call JAX infers afresh each time (about 0.1 ms); a model with a thousand leaves pays that for
each operator of each leaf, which made tracing our step slower than optax's. :func:`leaf_step`
jits :func:`~rmsprop_jax._leaf_update.update_leaf` with everything static bound (the
configuration, the leaf's storages, a learning rate and weight decay that are Python numbers)
as a function of its own, ``rmsprop_leaf``: JAX traces it once per distinct input type and
lowers it once, and the step calls it for each leaf. XLA inlines the calls before it
optimizes, so the compiled step is the one tracing each leaf would give, and its results
are too (``tests/test_trajectories.py`` holds them bit for bit). Measured at 1024 leaves of
1K entries: the trace (``lower``) takes 0.4-0.6x optax's (``benchmarks/NOTES.md``, "Trace
and compile: one traced function per kind of leaf").

Outside a trace (an eager ``update``) and with hyperparameters that are arrays (as under
``optax.inject_hyperparams``: they cannot be static) it calls ``update_leaf`` directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax import core

from rmsprop_jax._leaf_update import LeafStep, RmsConfig, Seeds, update_leaf
from rmsprop_jax._plan import LeafStorages
from rmsprop_jax._storage import Stored

_ARGUMENT = "an argument"
"""The static stand-in of a learning rate or weight decay that is an array: it is passed at the call."""


def _static(value: Any) -> Any:
    """A Python number (or ``None``) as it is; anything else is passed as an argument."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    return _ARGUMENT


def _leaf_function(config: RmsConfig, storages: LeafStorages, learning_rate: Any, weight_decay: Any) -> Callable:
    """``update_leaf`` with the static parts bound; an array learning rate or weight decay is an argument."""

    def rmsprop_leaf(grad, nu, mu, trace, param, count, seeds, dynamic_lr, dynamic_weight_decay):  # noqa: ANN001, ANN202
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
    """The jitted ``rmsprop_leaf``, one per distinct static part (not inlined into the jaxpr: lowered
    once, called per leaf)."""
    return jax.jit(_leaf_function(config, storages, learning_rate, weight_decay))


def leaf_step(
    config: RmsConfig,
    storages: LeafStorages,
    scalars: tuple[Any, Any, jax.Array | None],
    grad: jax.Array,
    nu: Stored,
    mu: Stored | None,
    trace: Stored | None,
    param: jax.Array | None,
    seeds: Seeds,
) -> LeafStep:
    """:func:`update_leaf` of one leaf (positional arrays, for ``jax.vmap`` over a stacked group)."""
    lr, weight_decay, count = scalars
    static_lr, static_weight_decay = _static(lr), _static(weight_decay)
    arguments = (grad, nu, mu, trace, param, count, seeds, lr, weight_decay)
    if isinstance(grad, core.Tracer):
        try:
            step = _jitted(config, storages, static_lr, static_weight_decay)
        except TypeError:  # array hyperparameters in the configuration are not hashable: trace directly
            pass
        else:
            return step(*arguments)
    return _leaf_function(config, storages, static_lr, static_weight_decay)(*arguments)
