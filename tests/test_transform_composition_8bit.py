"""The 8-bit state under jit, vmap and the optax wrappers, and in nnx.Optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import require

import rmsprop_jax
from rmsprop_jax import _storage_8bit as codec


def _params() -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((64, 128)), jnp.float32), "b": jnp.asarray(rng.standard_normal(16))}


def _grads(params: dict, step: int) -> dict:
    return jax.tree.map(lambda p: jnp.sin(3.0 * p + step) * (1.0 + p * p), params)


def _equal(a: object, b: object) -> None:
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_jit_equals_eager_to_float32_rounding():
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True, state_dtype="8bit")
    params = _params()
    eager = jitted = (params, tx.init(params))
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    for i in range(5):
        u, s = tx.update(_grads(eager[0], i), eager[1], eager[0])
        eager = (optax.apply_updates(eager[0], u), s)
        u, s = step(jitted[0], jitted[1], _grads(jitted[0], i))
        jitted = (optax.apply_updates(jitted[0], u), s)
    # XLA fuses the jitted step (one rounding of a float32 product may differ), so compare the values
    for a, b in zip(jax.tree.leaves(eager[0]), jax.tree.leaves(jitted[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    views = [rmsprop_jax.state_as_float32(run[1]) for run in (eager, jitted)]
    for a, b in zip(*(jax.tree.leaves(view) for view in views), strict=True):
        np.testing.assert_allclose(a, b, rtol=0.15, atol=1e-6)  # a code may flip at a rounding boundary
    assert isinstance(eager[1].nu["w"], codec.Quantized)


def test_vmap_over_a_batch_of_models_equals_each_model_alone():
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit")
    batch = jax.tree.map(lambda p: jnp.stack([p, 2 * p, -p]), _params())
    state = jax.vmap(tx.init)(batch)
    grads = jax.tree.map(lambda p: jnp.cos(p), batch)
    updates, state = jax.jit(jax.vmap(tx.update))(grads, state, batch)
    one = jax.tree.map(lambda p: p[1], batch)
    alone_updates, alone_state = tx.update(jax.tree.map(jnp.cos, one), tx.init(one), one)
    _equal(jax.tree.map(lambda x: x[1], updates), alone_updates)
    # the rounding is keyed by the element's index within its model, so each model draws its own model's bits
    _equal(jax.tree.map(lambda x: x[1], state), alone_state)


def test_chain_and_inject_hyperparams_with_the_state_dtype_by_name():
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        # decay traced: the buffer's scale bound falls back to a reduction over the step
        optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=0.1, decay=0.9, momentum=0.5, state_dtype="8bit"),
    )
    params = _params()
    state = tx.init(params)
    step = jax.jit(tx.update)
    updates, state = step(_grads(params, 0), state, params)
    assert isinstance(state[1].inner_state.nu["w"], codec.Quantized)
    reference = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(0.1, decay=0.9, momentum=0.5))
    want, _ = reference.update(_grads(params, 0), reference.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0.2, atol=1e-3), updates, want)
    state[1].hyperparams["learning_rate"] = jnp.asarray(0.0)
    state[1].hyperparams["momentum"] = jnp.asarray(0.0)
    updates, state = step(_grads(params, 1), state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))


def test_multi_steps_accumulates_then_applies():
    inner = rmsprop_jax.rmsprop(0.1, state_dtype="8bit")
    tx = optax.MultiSteps(inner, every_k_schedule=3)
    params = _params()
    state = tx.init(params)
    grads = [_grads(params, i) for i in range(3)]
    for g in grads[:2]:
        updates, state = tx.update(g, state, params)
        assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    updates, state = tx.update(grads[2], state, params)
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    expected, _ = inner.update(mean, inner.init(params), params)
    # MultiSteps averages in its own order: an entry whose nu sits on a code boundary may round the other way
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0.02), updates, expected)


def test_apply_if_finite_skips_a_nan_step_and_keeps_the_codes():
    tx = optax.apply_if_finite(rmsprop_jax.rmsprop(0.1, momentum=0.9, state_dtype="8bit"), max_consecutive_errors=3)
    params = _params()
    state = tx.init(params)
    _, state = tx.update(_grads(params, 0), state, params)
    before = state.inner_state
    bad = _grads(params, 1)
    bad["w"] = bad["w"].at[0, 0].set(jnp.nan)
    updates, state = jax.jit(tx.update)(bad, state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    _equal(state.inner_state, before)
    assert int(state.notfinite_count) == 1


def test_masked_and_multi_transform():
    params = _params()
    grads = _grads(params, 0)
    masked = optax.masked(rmsprop_jax.rmsprop(0.1, state_dtype="8bit"), {"w": True, "b": False})
    updates, _ = masked.update(grads, masked.init(params), params)
    np.testing.assert_array_equal(updates["b"], grads["b"])  # untouched
    float32 = rmsprop_jax.rmsprop(0.1)
    want, _ = float32.update(grads, float32.init(params), params)
    np.testing.assert_allclose(updates["w"], want["w"], rtol=0.2)

    multi = optax.multi_transform(
        {"rms": rmsprop_jax.rmsprop(0.1, centered=True, state_dtype="8bit"), "sgd": optax.sgd(0.1)},
        {"w": "rms", "b": "sgd"},
    )
    updates, _ = jax.jit(multi.update)(grads, multi.init(params), params)
    np.testing.assert_allclose(updates["b"], -0.1 * grads["b"], rtol=1e-6)
    assert np.all(np.isfinite(updates["w"])) and float(jnp.max(jnp.abs(updates["w"]))) > 0


@pytest.mark.parametrize("variant", [{}, {"momentum": 0.9}, {"centered": True, "momentum": 0.9}])
def test_flax_nnx_optimizer_trains_a_model(variant):
    nnx = require("flax.nnx")
    model = nnx.Linear(64, 64, rngs=nnx.Rngs(0))  # a 4096-entry kernel: quantized
    optimizer = nnx.Optimizer(model, rmsprop_jax.rmsprop(3e-3, state_dtype="8bit", **variant), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((256, 64)), jnp.float32)
    y = x @ jnp.asarray(rng.standard_normal((64, 64)) / 8, jnp.float32) + 0.3

    @nnx.jit
    def train_step(model: nnx.Linear, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, x, y)) for _ in range(300)]
    assert losses[-1] < 0.05 * losses[0]
    kernel_state = jax.tree.leaves(optimizer.opt_state.nu["kernel"])  # NNX keeps the codes and scales
    assert [leaf.dtype for leaf in kernel_state] == [jnp.uint8, jnp.float32]
    view = rmsprop_jax.state_as_float32(nnx.as_pure(optimizer.opt_state))
    assert view.nu["kernel"].dtype == jnp.float32 and view.nu["kernel"].shape == (64, 64)
