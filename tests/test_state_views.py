"""state_as_float32 and convert_state on float, 16-bit and 8-bit states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import hard_gradients, run_steps

import rmsprop_jax
from rmsprop_jax import _codec_8bit as codec

VARIANTS = {"plain": {}, "momentum": {"momentum": 0.9}, "centered+momentum": {"centered": True, "momentum": 0.9}}


def _params() -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((64, 128)), jnp.float32), "b": jnp.zeros(16)}


def _trained(tx: optax.GradientTransformation, steps: int = 20) -> tuple[dict, object]:
    grads = [{"w": jnp.asarray(g) * 0.1 + 1.0, "b": jnp.ones(16)} for g in hard_gradients(steps, (64, 128), seed=1)]
    return run_steps(tx, _params(), grads, jit=False)[:2]


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS)
def test_the_view_of_a_float32_state_is_the_state(variant):
    _, state = _trained(rmsprop_jax.rmsprop(1e-3, **variant))
    view = rmsprop_jax.state_as_float32(state)
    for a, b in zip(jax.tree.leaves(view), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "8bit"])
@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS)
def test_the_view_of_a_narrow_state_holds_the_float32_states_moments(variant, state_dtype):
    _, exact = _trained(rmsprop_jax.rmsprop(1e-3, **variant))
    _, narrow = _trained(rmsprop_jax.rmsprop(1e-3, state_dtype=state_dtype, **variant))
    view = rmsprop_jax.state_as_float32(narrow)
    assert view.count is not None  # narrow states count steps (rounding seeds); the rest is the float32 tree
    assert jax.tree.structure(view._replace(count=None)) == jax.tree.structure(exact)
    for field in ("nu", "mu", "trace"):
        if getattr(exact, field) is None:
            continue
        for name in ("w", "b"):
            got, want = np.asarray(getattr(view, field)[name]), np.asarray(getattr(exact, field)[name])
            assert got.dtype == np.float32 and got.shape == want.shape
            scale = np.mean(np.abs(want))
            # within a code step (1/8 of a binade) on average: ~0.1 is the noise the 20 roundings leave
            assert np.mean(np.abs(got - want)) <= 0.125 * scale, (field, name)


def test_the_view_maps_every_rmsprop_state_inside_a_chain():
    tx = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(1e-3, state_dtype="8bit"))
    _, state = _trained(tx, steps=3)
    view = rmsprop_jax.state_as_float32(state)
    assert view[0] == state[0]
    assert view[1].nu["w"].dtype == jnp.float32 and view[1].nu["w"].shape == (64, 128)
    assert isinstance(state[1].nu["w"], codec.Quantized)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS)
@pytest.mark.parametrize(("source", "target"), [(None, "8bit"), ("8bit", None), ("8bit", "bfloat16"), (None, None)])
def test_convert_state_moves_a_run_between_state_dtypes(variant, source, target):
    old_tx = rmsprop_jax.rmsprop(optax.linear_schedule(1e-3, 1e-4, 50), state_dtype=source, **variant)
    new_tx = rmsprop_jax.rmsprop(optax.linear_schedule(1e-3, 1e-4, 50), state_dtype=target, **variant)
    params, state = _trained(old_tx, steps=7)
    converted = rmsprop_jax.convert_state(state, new_tx.init(params))
    assert jax.tree.structure(converted) == jax.tree.structure(new_tx.init(params))
    assert int(converted.count) == 7
    before, after = rmsprop_jax.state_as_float32(state), rmsprop_jax.state_as_float32(converted)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before), strict=True):
        np.testing.assert_allclose(a, b, rtol=0.15, atol=1e-6 * float(np.max(np.abs(b))))
    if source == target:
        for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(state), strict=True):
            np.testing.assert_array_equal(a, b)
    updates, _ = new_tx.update(jax.tree.map(jnp.ones_like, params), converted, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_convert_state_refuses_another_variant():
    params = _params()
    state = rmsprop_jax.rmsprop(1e-3).init(params)
    with pytest.raises(ValueError, match=r"convert_state changes only how a state is stored.*trace"):
        rmsprop_jax.convert_state(state, rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit").init(params))


def test_convert_state_refuses_other_params():
    state = rmsprop_jax.rmsprop(1e-3).init(_params())
    other = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit").init({"w": jnp.zeros((64, 64)), "b": jnp.zeros(16)})
    with pytest.raises(ValueError, match=r"convert_state changes only how a state is stored.*shape"):
        rmsprop_jax.convert_state(state, other)


def test_tree_map_params_works_on_the_view():
    tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit")
    _, state = _trained(tx, steps=3)
    view = rmsprop_jax.state_as_float32(state)
    float_like = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="bfloat16")  # a tree with a count, as the view
    halved = optax.tree_map_params(float_like, lambda p: p / 2, view)
    np.testing.assert_allclose(halved.trace["w"], view.trace["w"] / 2)


def test_convert_state_draws_each_leafs_rounding_from_its_own_seed():
    """Two leaves holding the same values, stored into bfloat16 with stochastic rounding: each leaf's
    seed is its own, so their roundings differ (with one seed for all they would be equal)."""
    params = {"a": jnp.zeros(4096), "b": jnp.zeros(4096)}
    source = rmsprop_jax.rmsprop(1e-3).init(params)
    values = jnp.asarray(1.0 + np.random.default_rng(0).uniform(0, 2.0**-8, 4096), jnp.float32)
    source = source._replace(nu={"a": values, "b": values})
    converted = rmsprop_jax.convert_state(source, rmsprop_jax.rmsprop(1e-3, state_dtype="bfloat16").init(params))
    a, b = (np.asarray(converted.nu[k], np.float32) for k in "ab")
    assert np.mean(a != b) > 0.2
    for stored in (a, b):  # each unbiased on its own
        assert abs(float(np.mean(stored)) - float(jnp.mean(values))) < 1e-4


def test_the_view_of_a_centered_8bit_state_is_the_second_moment_not_the_variance():
    """A gradient of mean 1 and spread 0.01: E[g^2] ~ 1 while the stored variance ~ 1e-4. The view's nu
    must be E[g^2] entry by entry, as the float32 state's (returning the variance would be off 10^4x)."""
    grads = [{"w": 1.0 + 0.01 * jnp.asarray(g) / 1e3, "b": jnp.ones(16)} for g in hard_gradients(20, (64, 128), 5)]
    grads = [{"w": jnp.clip(g["w"], 0.9, 1.1), "b": g["b"]} for g in grads]
    exact = run_steps(rmsprop_jax.rmsprop(1e-3, centered=True), _params(), grads, jit=False)[1]
    narrow = run_steps(rmsprop_jax.rmsprop(1e-3, centered=True, state_dtype="8bit"), _params(), grads, jit=False)[1]
    assert isinstance(narrow.nu["w"], codec.Quantized)
    view = rmsprop_jax.state_as_float32(narrow)
    # mu is on a neighbouring code (within 1/8 of a binade), so E[g^2] = var + mu^2 is within about 2/8
    np.testing.assert_allclose(np.asarray(view.mu["w"]), np.asarray(exact.mu["w"]), rtol=0.13)
    np.testing.assert_allclose(np.asarray(view.nu["w"]), np.asarray(exact.nu["w"]), rtol=0.3)
