"""State dtype policy, mixed precision, complex params, stochastic rounding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import _dtypes as dtypes

FULL = {"centered": True, "momentum": 0.9}


@pytest.mark.parametrize("param_dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_params_get_a_float32_state_and_updates_in_their_dtype(param_dtype):
    tx = rmsprop_jax.rmsprop(0.01, **FULL)
    params = {"w": jnp.ones(4, param_dtype), "x": jnp.ones(2, jnp.float32)}
    state = tx.init(params)
    for moment in (state.nu, state.mu, state.trace):
        assert moment["w"].dtype == jnp.float32
        assert moment["x"].dtype == jnp.float32
    updates, state = jax.jit(tx.update)(jax.tree.map(lambda p: p * 0.5, params), state, params)
    assert updates["w"].dtype == param_dtype
    assert updates["x"].dtype == jnp.float32
    assert state.nu["w"].dtype == jnp.float32


@pytest.mark.parametrize("state_dtype", ["bfloat16", jnp.bfloat16, "float16", np.dtype("float16")])
def test_state_dtype_overrides_the_policy(state_dtype):
    tx = rmsprop_jax.rmsprop(0.01, state_dtype=state_dtype, **FULL)
    params = jnp.ones(3, jnp.float32)
    state = tx.init(params)
    expected = jnp.dtype(state_dtype)
    assert state.nu.dtype == state.mu.dtype == state.trace.dtype == expected
    updates, state = tx.update(params, state, params)
    assert updates.dtype == jnp.float32
    assert state.nu.dtype == expected


def test_float64_stays_float64_under_x64():
    with jax.enable_x64(True):
        tx = rmsprop_jax.rmsprop(0.01, **FULL)
        params = jnp.ones(3, jnp.float64)
        state = tx.init(params)
        updates, state = tx.update(params * 1e-3, state, params)
        assert updates.dtype == state.nu.dtype == state.mu.dtype == state.trace.dtype == jnp.float64
        theirs, _ = optax.rmsprop(0.01, **FULL).update(params * 1e-3, optax.rmsprop(0.01, **FULL).init(params))
        np.testing.assert_allclose(updates, theirs, rtol=1e-14)


@pytest.mark.parametrize("kwargs", [{}, FULL, {"eps_in_sqrt": False, "bias_correction": True}])
def test_complex_params_match_optax(kwargs):
    ours, theirs = rmsprop_jax.rmsprop(0.01, **kwargs), optax.rmsprop(0.01, **kwargs)
    rng = np.random.default_rng(0)
    params = jnp.asarray(rng.standard_normal(5) + 1j * rng.standard_normal(5), jnp.complex64)
    state_ours, state_theirs = ours.init(params), theirs.init(params)
    assert state_ours.nu.dtype == jnp.float32  # |g|^2 is real: half the memory of optax's complex nu
    for _ in range(20):
        g = jnp.asarray(rng.standard_normal(5) + 1j * rng.standard_normal(5), jnp.complex64)
        u_ours, state_ours = ours.update(g, state_ours, params)
        u_theirs, state_theirs = theirs.update(g, state_theirs, params)
        assert u_ours.dtype == jnp.complex64
        np.testing.assert_allclose(u_ours, u_theirs, rtol=1e-5, atol=1e-7)


def test_stochastic_rounding_is_unbiased_and_deterministic():
    value = jnp.full((200_000,), 1.0 + 2.0**-10, jnp.float32)  # between two bfloat16 neighbours
    stored = dtypes.store(value, jnp.dtype(jnp.bfloat16), jnp.uint32(1))
    assert stored.dtype == jnp.bfloat16
    assert set(np.unique(np.asarray(stored, np.float32))) == {1.0, 1.0 + 2.0**-7}
    mean = float(jnp.mean(stored.astype(jnp.float32)))
    assert abs(mean - float(value[0])) < 1e-4  # round-to-nearest would give exactly 1.0
    again = dtypes.store(value, jnp.dtype(jnp.bfloat16), jnp.uint32(1))
    np.testing.assert_array_equal(stored, again)
    nearest = dtypes.store(value, jnp.dtype(jnp.bfloat16), None)
    np.testing.assert_array_equal(np.asarray(nearest, np.float32), 1.0)


@pytest.mark.parametrize("fraction", [1 / 8, 1 / 3, 1 / 2, 0.9])
def test_stochastic_rounding_rounds_up_with_the_residual_as_probability(fraction):
    gap = 2.0**-7  # bfloat16 spacing on [1, 2)
    value = jnp.full((400_000,), 1.0 + fraction * gap, jnp.float32)
    stored = np.asarray(dtypes.store(value, jnp.dtype(jnp.bfloat16), jnp.uint32(7)), np.float32)
    rounded_up = np.mean(stored > 1.0)
    assert abs(rounded_up - fraction) < 4 * np.sqrt(fraction * (1 - fraction) / stored.size)


def test_rounding_seeds_differ_by_step_leaf_and_field():
    seeds = {
        int(dtypes.rounding_seed(jnp.int32(c), leaf, field))
        for c in range(4)
        for leaf in range(5)
        for field in range(3)
    }
    assert len(seeds) == 4 * 5 * 3
    value = jnp.full((4096,), 1.0 + 2.0**-9, jnp.float32)
    a = dtypes.store(value, jnp.dtype(jnp.bfloat16), dtypes.rounding_seed(jnp.int32(0), 0, 0))
    b = dtypes.store(value, jnp.dtype(jnp.bfloat16), dtypes.rounding_seed(jnp.int32(1), 0, 0))
    assert not np.array_equal(a, b)


def test_stochastic_rounding_keeps_exact_and_non_finite_values():
    value = jnp.array([0.0, 1.0, -2.5, jnp.inf, -jnp.inf, 1e30], jnp.float32)
    stored = np.asarray(dtypes.store(value, jnp.dtype(jnp.float16), jnp.uint32(0)), np.float32)
    np.testing.assert_array_equal(stored[:5], [0.0, 1.0, -2.5, np.inf, -np.inf])
    assert stored[5] == np.inf  # overflows like a cast


def test_bfloat16_stochastic_rounding_keeps_exact_and_non_finite_values():
    nan_low_payload = np.array([0x7F800001], np.uint32).view(np.float32)[0]  # a NaN truncation would make inf
    value = jnp.array([0.0, -0.0, 1.0, -2.5, jnp.inf, -jnp.inf, jnp.nan, nan_low_payload, 1e-40], jnp.float32)
    for seed in range(20):
        stored = np.asarray(dtypes.store(value, jnp.dtype(jnp.bfloat16), jnp.uint32(seed)), np.float32)
        np.testing.assert_array_equal(stored[:6], [0.0, -0.0, 1.0, -2.5, np.inf, -np.inf])
        assert np.isnan(stored[6]) and np.isnan(stored[7])
        assert stored[8] >= 0 and np.isfinite(stored[8])


def test_bfloat16_stochastic_rounding_is_unbiased_for_negative_values():
    value = jnp.full((400_000,), -(1.0 + 3 * 2.0**-10), jnp.float32)  # 3/8 of the way to -(1 + 2^-7)
    stored = np.asarray(dtypes.store(value, jnp.dtype(jnp.bfloat16), jnp.uint32(11)), np.float32)
    assert set(np.unique(stored)) == {-1.0, -(1.0 + 2.0**-7)}
    assert abs(stored.mean() - float(value[0])) < 2e-5


def _track_gradient_scale_change(tx, params, steps):
    """Gradient magnitude 1 for 200 steps, then 0.1: returns the state after `steps` more steps."""

    @jax.jit
    def run(state):
        def step(state, g):
            _, state = tx.update(jnp.full_like(params, g), state, params)
            return state, None

        grads = jnp.concatenate([jnp.ones(200), jnp.full(steps, 0.1)])
        return jax.lax.scan(step, state, grads)[0]

    return run(tx.init(params))


def test_bfloat16_state_follows_a_change_of_gradient_scale():
    # decay 0.999: each step moves nu by 1e-3 * (0.01 - nu), under half a bfloat16
    # ulp of nu, so round-to-nearest never moves it; stochastic rounding must.
    params = jnp.zeros(4096, jnp.bfloat16)
    steps = 3000
    tx = rmsprop_jax.rmsprop(1e-3, decay=0.999, state_dtype="bfloat16")
    ours = _track_gradient_scale_change(tx, params, steps).nu
    exact = _track_gradient_scale_change(rmsprop_jax.rmsprop(1e-3, decay=0.999), params, steps).nu
    stalled = _track_gradient_scale_change(optax.rmsprop(1e-3, decay=0.999), params, steps)[0].nu
    assert ours.dtype == stalled.dtype == jnp.bfloat16
    assert exact.dtype == jnp.float32
    expected = float(exact[0])
    first_phase = 1 - 0.999**200
    assert expected == pytest.approx(first_phase * 0.999**steps + 0.01 * (1 - 0.999**steps), rel=5e-3)
    mean_ours = float(jnp.mean(ours.astype(jnp.float32)))
    assert mean_ours == pytest.approx(expected, rel=0.02)
    # optax's bfloat16 state, rounded to nearest, stays frozen near the old scale.
    assert float(jnp.mean(stalled.astype(jnp.float32))) > 2 * expected


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("fraction", [1 / 8, 1 / 3, 1 / 2, 0.9])
def test_float16_stochastic_rounding_rounds_up_with_the_residual_as_probability(fraction, sign):
    """float32 to float16 takes the general path (a uniform number against residual / gap): unbiased too."""
    gap = 2.0**-10  # float16 spacing on [1, 2)
    value = jnp.full((400_000,), sign * (1.0 + fraction * gap), jnp.float32)
    stored = np.asarray(dtypes.store(value, jnp.dtype(jnp.float16), jnp.uint32(7)), np.float64)
    assert set(np.unique(np.abs(stored))) == {1.0, 1.0 + gap}
    away = np.mean(np.abs(stored) > 1.0)
    tolerance = 4 * np.sqrt(fraction * (1 - fraction) / stored.size)
    assert abs(away - fraction) < tolerance
    assert abs(np.mean(stored) - float(value[0])) < tolerance * gap


def test_the_8bit_rounding_bits_are_distinct_per_entry_and_uniform_over_steps():
    """``rounding_bits``: within a step the 32-bit products of all entries differ (a bijection of the index,
    so no two entries share a draw); for each entry the top bits are uniform over steps."""
    seed = dtypes.rounding_seed(jnp.asarray(7), 3, 0)
    full = np.asarray(dtypes.rounding_bits(seed, (64, 1024), 32))
    assert np.unique(full).size == full.size
    steps = 4096
    draws = np.stack(
        [np.asarray(dtypes.rounding_bits(dtypes.rounding_seed(jnp.asarray(c), 0, 0), (8,), 4)) for c in range(steps)]
    )
    assert draws.max() < 16
    for entry in range(draws.shape[1]):  # chi-square over 16 bins, 15 degrees of freedom: 37.7 is its 0.999 quantile
        counts = np.bincount(draws[:, entry], minlength=16)
        expected = steps / 16
        assert np.sum((counts - expected) ** 2 / expected) < 37.7, (entry, counts)
    # neighbours within a step are not copies of each other: their draws differ in most entries
    assert np.mean(full[:, 1:] >> 28 == full[:, :-1] >> 28) < 0.2
