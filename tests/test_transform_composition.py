"""rmsprop composed with optax wrappers: what is float-specific (hand-computed values, hyperparameter
injection). The wrappers and Flax NNX in every storage and layout: tests/test_storage_layout_matrix.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax


def _quadratic_grads(params):
    return jax.tree.map(lambda p: 2.0 * p - 1.0, params)


def test_chain_with_clipping_and_a_schedule_trains():
    tx = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(optax.cosine_decay_schedule(0.05, 200)))
    params = {"a": jnp.full(3, 3.0), "b": jnp.full((2,), -2.0)}
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(_quadratic_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(200):
        params, state = step(params, state)
    for leaf in jax.tree.leaves(params):
        np.testing.assert_allclose(leaf, 0.5, atol=0.05)


def test_inject_hyperparams_changes_learning_rate_and_decay_at_run_time():
    tx = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=0.1, decay=0.9, momentum=0.5)
    params = jnp.ones(3)
    state = tx.init(params)
    step = jax.jit(tx.update)
    _, state = step(jnp.ones(3), state, params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.0)
    updates, state = step(jnp.ones(3), state, params)
    # lr 0 with lr_in_momentum: the buffer still carries 0.5 * the previous velocity.
    reference = rmsprop_jax.rmsprop(0.1, decay=0.9, momentum=0.5)
    _, ref_state = reference.update(jnp.ones(3), reference.init(params), params)
    np.testing.assert_allclose(updates, -0.5 * ref_state.trace, rtol=1e-6)
    state.hyperparams["decay"] = jnp.asarray(0.0)
    state.hyperparams["learning_rate"] = jnp.asarray(0.1)
    _, state = step(jnp.full(3, 2.0), state, params)
    np.testing.assert_allclose(state.inner_state.nu, 4.0)  # decay 0: nu is the last g^2


def test_inject_hyperparams_with_a_schedule_and_static_callables():
    mask = lambda params: {"w": True, "b": False}  # noqa: E731
    tx = optax.inject_hyperparams(rmsprop_jax.rmsprop, static_args=("weight_decay_mask", "state_dtype"))(
        learning_rate=optax.linear_schedule(0.1, 0.0, 10),
        weight_decay=0.1,
        decoupled_weight_decay=True,
        weight_decay_mask=mask,
        state_dtype=jnp.bfloat16,
    )
    params = {"w": jnp.ones(2), "b": jnp.ones(2)}
    state = tx.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = jax.jit(tx.update)(zeros, state, params)
    np.testing.assert_allclose(updates["w"], -0.1 * 0.1, rtol=1e-6)
    np.testing.assert_allclose(updates["b"], 0.0)
    assert state.inner_state.nu["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.1, rtol=1e-6)  # the rate of the step taken
    updates, state = jax.jit(tx.update)(zeros, state, params)
    np.testing.assert_allclose(updates["w"], -0.09 * 0.1, rtol=1e-6)  # second step: lr 0.09


def test_inject_hyperparams_casts_to_bfloat16_params_unless_told_otherwise():
    params = jnp.ones(4, jnp.bfloat16)
    default = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=1e-3, decay=0.999)
    with pytest.raises(ValueError, match=r"Invalid decay value: 1.0 .*0.999 rounds to 1.0: pass hyperparam_dtype"):
        default.init(params)  # 0.999 rounds to 1.0 in bfloat16: the average would never move
    fixed = optax.inject_hyperparams(rmsprop_jax.rmsprop, hyperparam_dtype=jnp.float32)(learning_rate=1e-3, decay=0.999)
    state = fixed.init(params)
    assert state.hyperparams["decay"].dtype == jnp.float32
    np.testing.assert_allclose(state.hyperparams["decay"], 0.999)
    _, state = fixed.update(jnp.ones(4, jnp.bfloat16), state, params)
    np.testing.assert_allclose(state.inner_state.nu, 1e-3, rtol=1e-4)  # decay 1.0 would leave 0


def test_masked_and_multi_transform_step_as_computed_by_hand():
    params = {"dense": {"w": jnp.ones(3)}, "embed": jnp.ones(4)}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    masked = optax.masked(rmsprop_jax.rmsprop(0.1), {"dense": {"w": True}, "embed": False})
    updates, _ = masked.update(grads, masked.init(params), params)
    np.testing.assert_allclose(updates["embed"], 0.5)  # untouched
    np.testing.assert_allclose(updates["dense"]["w"], -0.1 / np.sqrt(0.1 + 1e-8 / 0.25), rtol=1e-5)

    multi = optax.multi_transform(
        {"rms": rmsprop_jax.rmsprop(0.1, centered=True), "sgd": optax.sgd(0.1)},
        {"dense": {"w": "rms"}, "embed": "sgd"},
    )
    updates, _ = jax.jit(multi.update)(grads, multi.init(params), params)
    np.testing.assert_allclose(updates["embed"], -0.05)
    assert np.all(np.abs(updates["dense"]["w"]) > 0.1)
