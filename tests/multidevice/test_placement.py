"""The state in host memory on 8 simulated devices: each shard's state in host memory, sharded as its
param; the step has no collective and equals the device-memory run bit for bit; a checkpoint restores
into host memory, sharded."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from sharding_cases import checkpoint_resumes, collectives, params_8bit_on, run_steps, state_matches

import rmsprop_jax

CONFIGS = {
    "float32": {"centered": True, "momentum": 0.9},
    "8bit": {"centered": True, "momentum": 0.9, "state_dtype": "8bit"},
    "packed bfloat16": {"momentum": 0.9, "state_dtype": "bfloat16", "pack_small_leaves": True},
}


def _state_arrays(state: object) -> list[jax.Array]:
    return [x for x in jax.tree.leaves(state) if x.ndim]


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("layout", ["fsdp", "2d"])
@pytest.mark.parametrize("axis_type", [AxisType.Auto, AxisType.Explicit])
def test_each_shard_keeps_its_state_in_host_memory_and_steps_as_in_device_memory(axis_type, layout, name):
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
    params = params_8bit_on(mesh, layout)
    host_tx = rmsprop_jax.rmsprop(1e-2, offload_state=True, **CONFIGS[name])
    with jax.set_mesh(mesh):
        state = host_tx.init(params)
        assert {x.sharding.memory_kind for x in _state_arrays(state)} == {"pinned_host"}
        if not CONFIGS[name].get("pack_small_leaves"):
            assert state_matches(jax.tree.map(lambda x: x.sharding.with_memory_kind("device"), state), params)
        texts: list[str] = []
        host = run_steps(host_tx, params, state=state, grads_on_host=True, on_compiled=texts.append)
        assert collectives(texts[0]) == []
        device = run_steps(rmsprop_jax.rmsprop(1e-2, **CONFIGS[name]), params, grads_on_host=True)
    assert {x.sharding.memory_kind for x in _state_arrays(host[1])} == {"pinned_host"}
    for a, b in zip(_state_arrays(host[1]), _state_arrays(device[1]), strict=True):
        assert a.sharding.is_equivalent_to(b.sharding.with_memory_kind("pinned_host"), a.ndim)
    for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(device), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_sharded_host_state_restores_into_host_memory_and_resumes_bit_identically():
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit", offload_state=True)
    with jax.set_mesh(mesh):
        checkpoint_resumes(tx, params_8bit_on(mesh, "2d"), saved_at=2, steps=4)
