"""The per-leaf state policy on 8 simulated devices: each leaf's state follows its param, the step
has no collective and equals one device's bit for bit, and a checkpoint resumes the same run."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType
from sharding_cases import (
    LAYOUTS_8BIT,
    checkpoint_resumes,
    collectives,
    params_8bit_on,
    run_steps,
    state_matches,
)

import rmsprop_jax
from rmsprop_jax import Nibbles, Quantized

POLICY = {"w": "8bit", "b": "bfloat16", "n": "8bit", "r": "float32", "q": "8bit", "e": "4bit"}


def _tx() -> optax.GradientTransformation:
    return rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, state_dtype=POLICY)


@functools.cache
def _one_device_run() -> tuple:
    return run_steps(_tx(), params_8bit_on(None, "data-parallel"), grads_on_host=True)


@pytest.mark.parametrize("layout", LAYOUTS_8BIT)
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_a_policy_state_is_sharded_as_its_params_and_steps_as_one_device(axis_type, layout):
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
    params = params_8bit_on(mesh, layout)
    with jax.set_mesh(mesh):
        state = _tx().init(params)
        assert state_matches(state, params) and state_matches(jax.jit(_tx().init)(params), params)
        assert sorted(name for name, leaf in state.nu.items() if isinstance(leaf, Quantized)) == ["n", "q", "w"]
        assert isinstance(state.nu["e"], Nibbles) and isinstance(state.mu["e"], Quantized)
        assert state.nu["b"].dtype == jnp.bfloat16 and state.nu["r"].dtype == jnp.float32
        texts: list[str] = []
        sharded = run_steps(_tx(), params, state=state, grads_on_host=True, on_compiled=texts.append)
        assert collectives(texts[0]) == []
    single = _one_device_run()  # every layout's one-device params are the same
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_sharded_policy_checkpoint_restores_sharded_and_resumes_bit_identically():
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    with jax.set_mesh(mesh):
        checkpoint_resumes(_tx(), params_8bit_on(mesh, "2d"), saved_at=3, steps=6)
