"""RmsPropState is a plain pytree: pmap and checkpointing work on it."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import require, run_steps

import rmsprop_jax

VARIANTS = [
    {},
    {"centered": True, "momentum": 0.9},
    {"bias_correction": True, "state_dtype": "bfloat16"},
    {"learning_rate": lambda count: 0.1 / (1 + count)},
]


def _params():
    return {"w": jnp.arange(6.0).reshape(2, 3), "b": [jnp.ones(3), None]}


def _run(tx, state, params, steps):
    sines = (lambda params, i: jax.tree.map(lambda p: jnp.sin(p + i), params), range(steps))
    return run_steps(tx, params, sines, state=state, jit=False)[:2]


def test_pmap_over_the_local_devices():
    tx = rmsprop_jax.rmsprop(0.1, centered=True, momentum=0.9)
    n = jax.local_device_count()
    params = jax.tree.map(lambda p: jnp.stack([p] * n), {"w": jnp.ones(3)})
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    updates, states = jax.pmap(tx.update)(grads, jax.pmap(tx.init)(params), params)
    single, _ = tx.update({"w": jnp.full(3, 0.5)}, tx.init({"w": jnp.ones(3)}), {"w": jnp.ones(3)})
    np.testing.assert_allclose(updates["w"][0], single["w"], rtol=1e-6)
    assert states.nu["w"].shape == (n, 3)


@pytest.mark.parametrize("kwargs", VARIANTS, ids=["plain", "centered-momentum", "bf16-count", "schedule"])
def test_pickle_round_trip_resumes_identically(kwargs):
    tx = rmsprop_jax.rmsprop(**{"learning_rate": 0.1, **kwargs})
    params = _params()
    params, state = _run(tx, tx.init(params), params, 3)
    restored = pickle.loads(pickle.dumps(jax.device_get(state)))
    assert type(restored) is rmsprop_jax.RmsPropState
    continued = _run(tx, state, params, 3)
    resumed = _run(tx, jax.tree.map(jnp.asarray, restored), params, 3)
    jax.tree.map(np.testing.assert_array_equal, continued, resumed)


@pytest.mark.parametrize("kwargs", VARIANTS[:3], ids=["plain", "centered-momentum", "bf16-count"])
def test_orbax_checkpoint_round_trip_resumes_identically(kwargs, tmp_path):
    ocp = require("orbax.checkpoint")
    tx = rmsprop_jax.rmsprop(**{"learning_rate": 0.1, **kwargs})
    params = _params()
    params, state = _run(tx, tx.init(params), params, 3)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
        checkpointer.wait_until_finished()
        target = {"params": params, "opt_state": tx.init(params)}
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert isinstance(restored["opt_state"], rmsprop_jax.RmsPropState)
    jax.tree.map(np.testing.assert_array_equal, restored["opt_state"], state)
    continued = _run(tx, state, params, 3)
    resumed = _run(tx, restored["opt_state"], restored["params"], 3)
    jax.tree.map(np.testing.assert_array_equal, continued, resumed)
