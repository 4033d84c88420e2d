"""Which leaves the 8-bit state quantizes, its bytes per parameter, and what it refuses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import _codec_8bit as codec
from rmsprop_jax import _plan as plans


@pytest.mark.parametrize(
    ("shape", "dtype", "layout"),
    [
        ((256, 512), jnp.float32, codec.TILES),
        ((64, 64), jnp.bfloat16, codec.Layout("boxes", block=(8, 8))),  # 64 split 8 ways: 8 wide
        ((3, 64, 64), jnp.float16, codec.Layout("boxes", block=(3, 8, 8))),
        ((4096,), jnp.float32, codec.RUNS),
        ((24, 512), jnp.float32, codec.Layout("boxes", block=(3, 64))),
        ((8, 16), jnp.float32, None),  # under 4096 entries
        ((100, 100), jnp.float32, codec.Layout("boxes", block=(5, 25))),  # no tile fits
        ((4097,), jnp.float32, codec.Layout("runs", 1, 241)),  # 17 x 241
        ((4099,), jnp.float32, codec.RUNS),  # prime: the last run padded
        ((3, 3, 40, 240), jnp.bfloat16, codec.Layout("boxes", block=(1, 1, 5, 30))),
    ],
)
def test_the_documented_rule_decides_which_leaves_are_quantized(shape, dtype, layout):
    state = rmsprop_jax.rmsprop(0.1, momentum=0.9, centered=True, state_dtype="8bit").init(jnp.zeros(shape, dtype))
    for stored in (state.nu, state.mu, state.trace):
        if layout is None:  # the default policy's dtype: float32 (also for 16-bit params)
            assert isinstance(stored, jax.Array) and stored.dtype == jnp.float32 and stored.shape == shape
        else:
            assert isinstance(stored, codec.Quantized)
            assert stored.codes.dtype == jnp.uint8 and stored.codes.shape == shape
            assert plans.read(state).leaves[0].storages.nu.layout == layout  # the shapes name the layout


def _bytes_per_param(state: rmsprop_jax.RmsPropState, params: dict) -> float:
    fields = [state.nu, state.mu, state.trace]
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(fields))
    return state_bytes / sum(p.size for p in jax.tree.leaves(params))


@pytest.mark.parametrize(
    ("variant", "float32_bytes", "limit"),
    [({}, 4, 1.02), ({"momentum": 0.9}, 8, 2.04), ({"momentum": 0.9, "centered": True}, 12, 3.06)],
)
def test_bytes_per_parameter_of_float32_leaves_of_at_least_4096_entries(variant, float32_bytes, limit):
    params = {"kernel": jnp.zeros((256, 512)), "embedding": jnp.zeros((4096,)), "proj": jnp.zeros((24, 512))}
    eight = _bytes_per_param(rmsprop_jax.rmsprop(0.1, state_dtype="8bit", **variant).init(params), params)
    full = _bytes_per_param(rmsprop_jax.rmsprop(0.1, **variant).init(params), params)
    assert full == float32_bytes
    assert eight <= limit


def test_complex_params_keep_a_float_state_beside_8bit_ones():
    tx = rmsprop_jax.rmsprop(0.1, momentum=0.9, state_dtype="8bit")
    params = {"w": jnp.ones((64, 64)), "z": jnp.ones((64, 64), jnp.complex64)}
    state = tx.init(params)
    assert isinstance(state.nu["w"], codec.Quantized) and state.nu["z"].dtype == jnp.float32
    assert state.trace["z"].dtype == jnp.complex64
    grads = {"w": jnp.full((64, 64), 0.5), "z": jnp.full((64, 64), 0.5 - 0.5j, jnp.complex64)}
    updates, state = jax.jit(tx.update)(grads, state, params)
    reference = rmsprop_jax.rmsprop(0.1, momentum=0.9)
    expected, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(updates["z"], expected["z"], rtol=1e-6)  # the complex leaf steps as float32
    assert rmsprop_jax.state_report(state).leaves[1].eight_bit == "no: complex"


def test_tree_map_params_raises_and_names_the_view():
    tx = rmsprop_jax.rmsprop(0.1, state_dtype="8bit")
    state = tx.init({"w": jnp.zeros((64, 64))})
    with pytest.raises(ValueError, match="state_as_float32"):
        optax.tree_map_params(tx, lambda p: p, state)


def test_tree_map_params_still_works_on_float_states():
    tx = rmsprop_jax.rmsprop(0.1, state_dtype="bfloat16")
    state = tx.init({"w": jnp.zeros((64, 64))})
    mapped = optax.tree_map_params(tx, lambda p: p.astype(jnp.float32), state)
    assert mapped.nu["w"].dtype == jnp.float32


def test_an_unknown_state_dtype_lists_8bit():
    with pytest.raises(ValueError, match=r"Invalid state_dtype value: 'int8'.*'8bit'"):
        rmsprop_jax.rmsprop(0.1, state_dtype="int8")


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_16_and_32_bit_params_train_with_an_8bit_state(dtype):
    tx = rmsprop_jax.rmsprop(0.01, momentum=0.9, state_dtype="8bit")
    params = {"w": jnp.full((64, 64), 3.0, dtype)}
    state = tx.init(params)
    for _ in range(100):
        updates, state = tx.update(jax.tree.map(lambda p: 2 * (p - 1), params), state, params)
        params = optax.apply_updates(params, updates)
    assert params["w"].dtype == dtype
    np.testing.assert_allclose(np.asarray(params["w"], np.float32), 1.0, atol=0.1)


def test_float64_params_train_with_an_8bit_state_and_keep_float64_updates():
    with jax.enable_x64(True):
        tx = rmsprop_jax.rmsprop(0.01, momentum=0.9, state_dtype="8bit")
        params = {"w": jnp.full((64, 64), 3.0, jnp.float64), "b": jnp.full(8, 3.0, jnp.float64)}
        state = tx.init(params)
        assert isinstance(state.nu["w"], codec.Quantized) and state.nu["b"].dtype == jnp.float64  # small: default
        for _ in range(100):
            updates, state = tx.update(jax.tree.map(lambda p: 2 * (p - 1), params), state, params)
            params = optax.apply_updates(params, updates)
        assert updates["w"].dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(params["w"]), 1.0, atol=0.1)


def _compiles_of_an_init(tx: optax.GradientTransformation, params: dict, caplog: pytest.LogCaptureFixture) -> int:
    caplog.clear()
    with jax.log_compiles(), caplog.at_level("WARNING"):
        jax.block_until_ready(tx.init(params))
    return sum("Compiling" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "8bit"])
def test_an_eager_init_compiles_no_program_per_shape(state_dtype, caplog):
    """An eager init compiled each operation for every shape of the tree (94 s for EfficientNet-B0's
    8-bit state): the compilations of a first init must not grow with the number of shapes."""
    tx = rmsprop_jax.rmsprop(0.1, momentum=0.9, centered=True, state_dtype=state_dtype)
    few = {f"w{i}": jnp.ones((64, 64 + 16 * i)) for i in range(2)}
    many = {f"w{i}": jnp.ones((96, 64 + 16 * i)) for i in range(8)}
    first = _compiles_of_an_init(tx, few, caplog)  # also whatever compiles once per process
    assert _compiles_of_an_init(tx, many, caplog) <= first


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "8bit"])
@pytest.mark.parametrize("initial_scale", [0.0, 0.1, 1.0])
def test_eager_jitted_and_committed_inits_hold_the_same_state(state_dtype, initial_scale):
    tx = rmsprop_jax.rmsprop(0.1, momentum=0.9, initial_scale=initial_scale, state_dtype=state_dtype)
    params = {"kernel": jnp.ones((64, 96), jnp.bfloat16), "bias": jnp.ones((96,)), "runs": jnp.ones((4099,))}
    eager, jitted = tx.init(params), jax.jit(tx.init)(params)
    assert jax.tree.structure(eager) == jax.tree.structure(jitted)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    # an uncommitted param (placed by default) gets an uncommitted state, a committed one a committed state
    assert not any(leaf.committed for leaf in jax.tree.leaves(eager) if leaf.ndim)
    device = jax.devices()[0]
    committed = tx.init(jax.device_put(params, device))
    assert all(leaf.committed and leaf.devices() == {device} for leaf in jax.tree.leaves(committed) if leaf.ndim)
