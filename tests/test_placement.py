"""The state in host memory (``offload_state``): where its arrays are after ``init``, after a jitted or
eager step and after a restore; the same trajectory as in device memory, bit for bit; path rules;
the compiled step's memory kinds; and the wrappers that cannot run on host arrays.

JAX on CPU has the memory kinds ``device``, ``pinned_host`` and ``unpinned_host`` (one RAM): the
semantics are all tested here; what it saves on a GPU is measured in ``benchmarks/host_state.py``.
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rmsprop_jax
from rmsprop_jax import checkpoint, presets

HOST, DEVICE = "pinned_host", "device"


def _params() -> dict:
    rng = np.random.default_rng(0)
    shapes = {"embed": (512, 64), "w": (64, 256), "b": (256,), "norm": (64,), "scale": (64,)}
    return {name: jnp.asarray(rng.standard_normal(shape), jnp.float32) for name, shape in shapes.items()}


def _kinds(tree: object) -> set[str]:
    return {x.sharding.memory_kind for x in jax.tree.leaves(tree)}


def _grads(params: dict, i: jax.Array) -> dict:
    return jax.tree.map(lambda p: jnp.sin(3.0 * p + i) * (1.0 + p * p), params)


def _run(tx: optax.GradientTransformation, params: dict, steps: int = 5, jit: bool = True) -> tuple[dict, object]:
    def step(params: dict, state: object, i: jax.Array) -> tuple[dict, object]:
        updates, state = tx.update(_grads(params, i), state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1)) if jit else step  # not the state alone: see Scaling
    params = jax.tree.map(jnp.copy, params)
    state = tx.init(params)
    for i in range(steps):
        params, state = step(params, state, jnp.float32(i))
    return params, state


CONFIGS = {
    "plain": {},
    "centered+momentum": {"centered": True, "momentum": 0.9},
    "bfloat16 momentum": {"momentum": 0.9, "state_dtype": "bfloat16"},
    "8bit centered+momentum": {"centered": True, "momentum": 0.9, "state_dtype": "8bit"},
    "packed centered+momentum": {"centered": True, "momentum": 0.9, "pack_small_leaves": True},
    "policy": {
        "momentum": 0.9,
        "state_dtype": {"embed": "float32", "w": "8bit", "b": "bfloat16", "norm": None, "scale": None},
    },
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_state_stays_in_host_memory_and_steps_bit_for_bit_as_in_device_memory(name):
    params = _params()
    host = _run(rmsprop_jax.rmsprop(1e-2, offload_state=True, **CONFIGS[name]), params)
    device = _run(rmsprop_jax.rmsprop(1e-2, **CONFIGS[name]), params)
    state_arrays = [x for x in jax.tree.leaves(host[1]) if x.ndim > 0]
    assert _kinds(state_arrays) == {HOST} and _kinds(host[0]) == {DEVICE}
    assert jax.tree.structure(host) == jax.tree.structure(device)
    for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(device), strict=True):
        np.testing.assert_array_equal(a, b)


def test_init_places_the_state_in_host_memory_eagerly_under_jit_and_in_the_compiled_init():
    params = _params()
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit", offload_state=True)
    assert _kinds(tx.init(params).nu) == _kinds(jax.jit(tx.init)(params).trace) == {HOST}
    shardings = jax.jit(tx.init).lower(params).compile().output_shardings  # an abstract target that keeps them
    assert {s.memory_kind for s in jax.tree.leaves(shardings.nu)} == {HOST}


def test_an_eager_step_reads_and_writes_host_memory_and_leaves_updates_on_the_device():
    params = _params()
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, offload_state=True)
    updates, state = tx.update(_grads(params, jnp.float32(0)), tx.init(params), params)
    assert _kinds(state.nu) == _kinds(state.trace) == {HOST} and _kinds(updates) == {DEVICE}
    eager = _run(tx, params, steps=3, jit=False)
    jitted = _run(tx, params, steps=3)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_path_rule_or_prefix_offloads_only_the_leaves_it_picks():
    params = _params()
    for rule in ({"embed": True, "w": True, "b": False, "norm": False, "scale": False}, lambda path, p: p.ndim == 2):
        state = rmsprop_jax.rmsprop(1e-2, momentum=0.9, offload_state=rule).init(params)
        kinds = {name: array.sharding.memory_kind for name, array in state.trace.items()}
        assert kinds == {"embed": HOST, "w": HOST, "b": DEVICE, "norm": DEVICE, "scale": DEVICE}
        _, stepped = _run(rmsprop_jax.rmsprop(1e-2, momentum=0.9, offload_state=rule), params, steps=2)
        assert {name: array.sharding.memory_kind for name, array in stepped.trace.items()} == kinds
    with pytest.raises(ValueError, match=r"Invalid offload_state\['w'\] value: 'yes'"):
        rmsprop_jax.rmsprop(1e-2, offload_state={"w": "yes"})
    with pytest.raises(ValueError, match="Invalid offload_state value: 1"):
        rmsprop_jax.rmsprop(1e-2, offload_state=1)


def test_packed_groups_never_mix_host_and_device_leaves():
    params = _params()
    rule = {"embed": False, "w": False, "b": False, "norm": True, "scale": False}
    tx = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, pack_small_leaves=True, offload_state=rule)
    state = tx.init(params)
    plan = rmsprop_jax.packing_plan(state)
    assert not any({2, 3} <= set(group) or {3, 4} <= set(group) for group in plan.groups), plan  # norm alone
    report = {leaf.path: leaf.memory for leaf in rmsprop_jax.state_report(state).leaves}
    assert report["['norm']"] == HOST and report["['scale']"] == DEVICE


def test_the_compiled_step_takes_and_returns_the_state_in_host_memory():
    params = _params()
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit", offload_state=True)
    lowered = jax.jit(lambda p, s, g: tx.update(g, s, p)).lower(params, tx.init(params), params)
    text = lowered.as_text()
    state_arrays = len([x for x in jax.tree.leaves(tx.init(params)) if x.ndim])  # the count stays on the device
    assert text.count('mhlo.memory_kind = "pinned_host"') == 2 * state_arrays  # each one in and out
    compiled = lowered.compile()
    assert {s.memory_kind for s in jax.tree.leaves(compiled.output_shardings[1].nu)} == {HOST}
    stats = compiled.memory_analysis()
    if stats is not None and stats.host_argument_size_in_bytes:  # where XLA reports host memory (not XLA:CPU)
        assert stats.host_argument_size_in_bytes >= rmsprop_jax.state_report(tx.init(params)).state_bytes


def test_orbax_restores_into_host_memory_and_resumes_the_same_run(tmp_path):
    params = _params()
    tx = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, state_dtype="8bit", offload_state=True)
    full = _run(tx, params, steps=4)

    @jax.jit
    def step(params: dict, state: object, i: jax.Array) -> tuple[dict, object]:
        updates, state = tx.update(_grads(params, i), state, params)
        return optax.apply_updates(params, updates), state

    part = (params, tx.init(params))
    for i in range(2):
        part = step(*part, jnp.float32(i))
    checkpoint.save(tmp_path / "ckpt", {"params": part[0], "opt_state": part[1]})
    restored = checkpoint.restore(tmp_path / "ckpt", {"params": params, "opt_state": tx.init(params)})
    assert _kinds([x for x in jax.tree.leaves(restored["opt_state"]) if x.ndim]) == {HOST}
    resumed = (restored["params"], restored["opt_state"])
    for i in range(2, 4):
        resumed = step(*resumed, jnp.float32(i))
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full), strict=True):
        np.testing.assert_array_equal(a, b)
    # pickle gives NumPy arrays: the state then steps in device memory; device_put puts it back
    unpickled = pickle.loads(pickle.dumps(jax.device_get(part[1])))
    back = jax.tree.map(lambda x, like: jax.device_put(x, like.sharding), unpickled, part[1])
    assert _kinds([x for x in jax.tree.leaves(back) if x.ndim]) == {HOST}


def test_presets_and_nnx_optimizer_keep_the_state_in_host_memory_under_nnx_jit():
    model = nnx.Linear(64, 256, rngs=nnx.Rngs(0))
    tx = presets.pytorch(lr=1e-2, momentum=0.9, state_dtype="8bit", offload_state=True)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model: nnx.Linear, optimizer: nnx.Optimizer, x: jax.Array) -> None:
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        optimizer.update(model, grads)

    for step in range(3):
        train_step(model, optimizer, jnp.full((4, 64), 0.1 * (step + 1)))
    state_arrays = [x for x in jax.tree.leaves(optimizer.opt_state) if jnp.ndim(x)]
    assert _kinds(state_arrays) == {HOST} and _kinds(nnx.state(model, nnx.Param)) == {DEVICE}


def test_convert_state_moves_a_state_between_device_and_host_memory():
    params = _params()
    on_device = _run(rmsprop_jax.rmsprop(1e-2, momentum=0.9), params, steps=2)[1]
    host_tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, offload_state=True)
    moved = rmsprop_jax.convert_state(on_device, host_tx.init(params))
    assert _kinds(moved.nu) == _kinds(moved.trace) == {HOST}
    back = rmsprop_jax.convert_state(moved, rmsprop_jax.rmsprop(1e-2, momentum=0.9).init(params))
    assert _kinds(back.nu) == {DEVICE}
    np.testing.assert_array_equal(back.nu["w"], on_device.nu["w"])


WRAPPERS = {
    "apply_if_finite": lambda tx: optax.apply_if_finite(tx, 3),
    "MultiSteps": lambda tx: optax.MultiSteps(tx, 2),
    "masked": lambda tx: optax.masked(tx, {"embed": True, "w": True, "b": False, "norm": True, "scale": True}),
    "chain with clipping": lambda tx: optax.chain(optax.clip_by_global_norm(1.0), tx),
}


@pytest.mark.parametrize("name", WRAPPERS)
def test_optax_wrappers_around_an_offloaded_state_keep_it_in_host_memory_and_step_as_in_device_memory(name):
    """On XLA:CPU a wrapper that computes on the state outside the step (apply_if_finite's select between
    the old and new state) runs on the host arrays; Scaling says what a GPU does with it."""
    params = _params()
    wrap = WRAPPERS[name]
    host = _run(wrap(rmsprop_jax.rmsprop(1e-2, momentum=0.9, offload_state=True)), params, steps=4)
    device = _run(wrap(rmsprop_jax.rmsprop(1e-2, momentum=0.9)), params, steps=4)
    inner = optax.tree_utils.tree_get(host[1], "trace")
    assert _kinds(inner) == {HOST}
    for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(device), strict=True):
        np.testing.assert_array_equal(a, b)


def test_inject_hyperparams_takes_offload_state_and_keeps_the_state_in_host_memory():
    params = _params()
    tx = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=1e-2, momentum=0.9, offload_state=True)
    _, state = _run(tx, params, steps=2)
    assert _kinds(state.inner_state.trace) == {HOST}
