"""The per-leaf step traced once per kind of leaf and called per chunk (``rmsprop_jax._traced_once``)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import _traced_once


def _params() -> dict[str, jax.Array]:
    """Leaves of three kinds interleaved in tree order, each with its own values."""
    rng = np.random.default_rng(0)
    shapes = [(8, 4), (5,), (8, 4), (3, 3, 2), (5,)] * 8
    return {f"p{i:02d}": jnp.asarray(rng.standard_normal(shape), jnp.float32) for i, shape in enumerate(shapes)}


def _grads(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(lambda p: jnp.cos(3 * p) + 0.1 * p.size, params)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True),
        lambda: rmsprop_jax.rmsprop(1e-2, weight_decay=0.1, weight_decay_mask=lambda p: {k: k < "p20" for k in p}),
        lambda: optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=1e-2, momentum=0.9),
        lambda: rmsprop_jax.rmsprop(1e-2, state_dtype="bfloat16", momentum=0.9),
    ],
    ids=["centered+momentum", "masked decay", "array hyperparameters", "bfloat16"],
)
def test_each_leaf_gets_its_own_step_when_leaves_of_a_kind_go_through_one_call(make):
    """Jitted (chunks of one kind through one call) equals eager (each leaf stepped on its own), leaf by leaf:
    a chunk that handed a leaf another's result, or a kind that mixed shapes or decay flags, fails here."""
    tx, params = make(), _params()
    state = tx.init(params)
    eager_updates, eager_state = tx.update(_grads(params), state, params)
    jit_updates, jit_state = jax.jit(tx.update)(_grads(params), state, params)
    pairs = zip(jax.tree.leaves((eager_updates, eager_state)), jax.tree.leaves((jit_updates, jit_state)), strict=True)
    for eager, jitted in pairs:
        np.testing.assert_allclose(np.asarray(jitted, np.float32), np.asarray(eager, np.float32), rtol=1e-6, atol=1e-7)


def test_a_step_calls_one_function_per_chunk_of_one_kind():
    """40 leaves of three kinds (16, 8 and 16 leaves): one callee per kind and chunk length, and
    ceil(n / CHUNK) calls per kind, not one per leaf."""
    tx, params = rmsprop_jax.rmsprop(1e-2, momentum=0.9), _params()
    text = jax.jit(tx.update).lower(_grads(params), tx.init(params), params).as_text()
    calls = re.findall(r"call @(rmsprop_leaves\w*)\(.*\) : \((.*)\) ->", text)
    kinds = {(8, 4): 16, (5,): 16, (3, 3, 2): 8}
    assert len(calls) == sum(-(-n // _traced_once.CHUNK) for n in kinds.values())
    assert len({callee for callee, _ in calls}) <= len(kinds) + 1  # one per kind (the 16-leaf kinds may share one)
    for _, types in calls:  # each call steps leaves of one shape: its arrays are all of one type (besides scalars)
        assert len(set(re.findall(r"tensor<\d[^>]*>", types))) == 1, types
