"""The 4-bit storage kind: which arrays it keeps in 4 bits, what it reads back, what it refuses, the
report, and a per-leaf policy that mixes it with float32 and 8 bits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import run_steps

import rmsprop_jax
from rmsprop_jax import Nibbles, Quantized
from rmsprop_jax import _storage_kinds as kinds
from rmsprop_jax._storage_4bit import FOUR_BIT_KIND, NibbleStorage
from rmsprop_jax._storage_8bit import BlockStorage
from rmsprop_jax._storage_float import FloatStorage


@pytest.mark.parametrize(
    ("shape", "nu", "signed"),
    [
        ((64, 256), NibbleStorage, BlockStorage),
        ((1280, 1000), NibbleStorage, BlockStorage),  # a classifier paired along its 1280 inputs (shards of 160)
        ((200, 1000), BlockStorage, BlockStorage),  # shards of 25 and 125: no axis pairs, 8 bits
        ((3, 3, 17, 31), BlockStorage, BlockStorage),  # runs over several axes, one padded
        ((64, 63), NibbleStorage, FloatStorage),  # 1024 to 4095 entries: nu 4-bit (boxes of 4 x 63), mu float32
        ((16, 63), FloatStorage, FloatStorage),  # under 1024 entries
    ],
)
def test_nu_in_4_bits_where_its_blocks_halve_mu_and_the_buffer_in_8(shape, nu, signed):
    param = jnp.zeros(shape)
    resolved = kinds.resolve("state_dtype", "4bit")
    assert isinstance(kinds.for_param(param, resolved, signed=False), nu)
    assert isinstance(kinds.for_param(param, resolved, signed=True), signed)
    for is_signed in (False, True):
        storage = kinds.for_param(param, resolved, is_signed)
        assert kinds.read(storage.filled(param, 0.5), is_signed) == storage


def test_a_4bit_state_in_an_8bit_optimizer_and_back_is_refused_naming_convert_state():
    params = {"w": jnp.zeros((64, 256)), "c": jnp.zeros((40, 1000))}
    four, eight = (rmsprop_jax.rmsprop(1e-3, state_dtype=s) for s in ("4bit", "8bit"))
    with pytest.raises(ValueError, match=r"keeps leaf \['w'\] in 4 bits, but .* is '8bit'.*convert_state"):
        eight.update(params, four.init(params), params)
    with pytest.raises(ValueError, match=r"keeps leaf \['w'\] in 8 bits, but .* is '4bit'.*convert_state"):
        four.update(params, eight.init(params), params)
    # c (shards of 5 and 125: no axis pairs) keeps 8 bits in both: a 4-bit state's 8-bit leaf is its own
    assert isinstance(four.init(params).nu["c"], Quantized) and FOUR_BIT_KIND.admits(
        kinds.read(four.init(params).nu["c"], False), (40, 1000)
    )
    converted = rmsprop_jax.convert_state(eight.init(params), four.init(params))
    assert isinstance(converted.nu["w"], Nibbles)
    four.update(params, converted, params)


def test_options_it_cannot_honour_are_refused_naming_the_arguments():
    with pytest.raises(ValueError, match=r"Invalid bias_correction value: True .*state_dtype='4bit'"):
        rmsprop_jax.rmsprop(1e-3, centered=True, bias_correction=True, state_dtype="4bit")
    with pytest.raises(ValueError, match="cannot map a 4-bit RMSProp state"):
        tx = rmsprop_jax.rmsprop(1e-3, state_dtype="4bit")
        params = {"w": jnp.zeros((64, 256))}
        optax.tree_map_params(tx, lambda p: p, tx.init(params))


def test_the_report_says_which_leaves_are_4bit_and_counts_their_bytes():
    params = {
        "w": jnp.zeros((128, 256)),
        "c": jnp.zeros((40, 1000)),
        "b": jnp.zeros(256),
        "s": jnp.zeros((64, 63)),
        "t": jnp.zeros((20, 100)),
    }
    report = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3, state_dtype="4bit").init(params))
    leaves = {leaf.path: leaf for leaf in report.leaves}
    assert leaves["['w']"].four_bit == "yes" and leaves["['w']"].eight_bit == "no: 4bit codes"
    assert leaves["['c']"].four_bit.startswith("no: 8 bits (no axis pairs") and leaves["['c']"].eight_bit == "yes"
    assert leaves["['b']"].four_bit == "no: 256 entries < 1024" and leaves["['b']"].storage == "float32"
    assert leaves["['s']"].four_bit == "yes" and leaves["['s']"].storage == "4bit boxes of 4x63 paired along axis -2"
    assert leaves["['t']"].four_bit.startswith("no: no axis pairs") and leaves["['t']"].storage == "float32"
    policy = rmsprop_jax.rmsprop(1e-3, state_dtype={"w": "8bit", "c": "4bit", "b": "4bit", "s": None, "t": "4bit"})
    mixed = {leaf.path: leaf for leaf in rmsprop_jax.state_report(policy.init(params)).leaves}
    assert mixed["['w']"].four_bit == "no: 8bit codes" and mixed["['s']"].four_bit == (
        "no: not requested (boxes of 4x63 paired along axis -2 fit)"
    )
    assert leaves["['w']"].state_bytes == 128 * 256 // 2 + 4 * 128 * 256 // 128  # half a byte and a scale per 128
    assert "4-bit" in str(report).splitlines()[0] and "% 4-bit)" in str(report)


def test_a_policy_mixes_float32_8bit_and_4bit_under_jit_and_matches_each_alone():
    params = {
        "embed": jnp.asarray(np.random.default_rng(0).standard_normal((100, 64)), jnp.float32),
        "kernel": jnp.asarray(np.random.default_rng(1).standard_normal((64, 256)), jnp.float32),
        "head": jnp.asarray(np.random.default_rng(2).standard_normal((256, 128)), jnp.float32),
    }
    policy = {"embed": "float32", "kernel": "4bit", "head": "8bit"}
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype=policy)
    steps = (lambda p, i: jax.tree.map(lambda x: jnp.sin(x * (i + 1)), p), range(6))
    moved, state, _ = run_steps(tx, params, steps)
    assert state.nu["embed"].dtype == jnp.float32
    assert isinstance(state.nu["kernel"], Nibbles) and isinstance(state.nu["head"], Quantized)
    rules = {leaf.path: leaf.rule for leaf in rmsprop_jax.state_report(state, state_dtype=policy).leaves}
    assert rules["['kernel']"] == "state_dtype['kernel'] = 4bit"
    for name, value in policy.items():  # each leaf steps as alone with its own state_dtype (other rounding seeds)
        alone = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype=None if value == "float32" else value)
        got, want = np.asarray(moved[name]), np.asarray(run_steps(alone, {name: params[name]}, steps)[0][name])
        if value == "float32":
            np.testing.assert_array_equal(got, want)
        else:  # on average within a tenth of how far the leaf moved
            assert np.mean(np.abs(got - want)) < 0.1 * np.mean(np.abs(want - np.asarray(params[name]))), name
