"""Continue a torch or Keras run in rmsprop_jax mid-training; match the original."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from framework_runs import (
    NAMES,
    assert_trajectories_match,
    keras_variables,
    run_keras_optimizer,
    run_ours,
    run_torch_optimizer,
    torch_parameters,
)
from helpers import require, require_keras_on_jax

from rmsprop_jax import RmsPropState, packing_plan, presets, state_as_float32
from rmsprop_jax._state import PackedGroups

SCHEDULE = optax.exponential_decay(0.02, transition_steps=10, decay_rate=0.7)


def lr_at(t: int) -> float:
    return float(SCHEDULE(t))


TORCH_RESUME_CASES = {
    "plain": {"lr": 0.01},
    "momentum-centered-weight_decay": {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.05},
    "schedule-momentum": {"lr": "schedule", "momentum": 0.9, "alpha": 0.9},
}


@pytest.mark.parametrize("case", TORCH_RESUME_CASES, ids=str)
def test_continue_a_torch_run(case):
    torch = require("torch")
    kwargs = dict(TORCH_RESUME_CASES[case])
    scheduled = kwargs["lr"] == "schedule"
    torch_kwargs = {**kwargs, "lr": lr_at(0)} if scheduled else kwargs
    schedule_fn = lr_at if scheduled else None

    parameters = torch_parameters()
    optimizer = torch.optim.RMSprop(parameters, **torch_kwargs)
    run_torch_optimizer(optimizer, parameters, steps=30, lr_at=schedule_fn)
    params_at_30 = {k: p.detach().numpy().copy() for k, p in zip(NAMES, parameters, strict=True)}
    state = presets.pytorch_state(optimizer.state_dict(), params_at_30, lr=SCHEDULE if scheduled else None)
    original = run_torch_optimizer(optimizer, parameters, steps=30, lr_at=schedule_fn, start=30)

    tx = presets.pytorch(**{**kwargs, "lr": SCHEDULE} if scheduled else kwargs)
    assert isinstance(state, RmsPropState)
    if scheduled:
        assert int(state.count) == 30
    resumed = run_ours(tx, steps=30, state=state, params=params_at_30, start=30)
    assert_trajectories_match(resumed, original)
    fresh = run_ours(tx, steps=30, params=params_at_30, start=30)  # without the converted state
    with pytest.raises(AssertionError):
        assert_trajectories_match(fresh, original)


KERAS_RESUME_CASES = {
    "plain": {"learning_rate": 0.01},
    "momentum-centered-weight_decay-clipnorm": {
        "learning_rate": 0.01,
        "momentum": 0.9,
        "centered": True,
        "weight_decay": 0.05,
        "clipnorm": 1.0,
    },
    "keras-schedule": {"learning_rate": "keras-schedule", "momentum": 0.5},
}


@pytest.mark.parametrize("case", KERAS_RESUME_CASES, ids=str)
def test_continue_a_keras_run(case):
    keras = require_keras_on_jax()
    kwargs = dict(KERAS_RESUME_CASES[case])
    if kwargs["learning_rate"] == "keras-schedule":
        kwargs["learning_rate"] = keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=10, decay_rate=0.5)
    variables = keras_variables()
    optimizer = keras.optimizers.RMSprop(**kwargs)
    run_keras_optimizer(optimizer, variables, steps=30)
    params_at_30 = {k: np.array(v.numpy()) for k, v in zip(NAMES, variables, strict=True)}
    state = presets.keras_state(optimizer, params_at_30)
    original = run_keras_optimizer(optimizer, variables, steps=30, start=30)

    resumed = run_ours(presets.keras(**kwargs), steps=30, state=state, params=params_at_30, start=30)
    assert_trajectories_match(resumed, original)
    fresh = run_ours(presets.keras(**kwargs), steps=30, params=params_at_30, start=30)
    with pytest.raises(AssertionError):
        assert_trajectories_match(fresh, original)


def test_torch_state_mismatches_are_reported():
    torch = require("torch")
    parameters = torch_parameters()
    optimizer = torch.optim.RMSprop(parameters, lr=0.01, momentum=0.9)
    run_torch_optimizer(optimizer, parameters, steps=2)
    state_dict = optimizer.state_dict()
    good = {k: p.detach().numpy() for k, p in zip(NAMES, parameters, strict=True)}
    with pytest.raises(ValueError, match="2 parameters but params has 1 leaves"):
        presets.pytorch_state(state_dict, {"bias": good["bias"]})
    with pytest.raises(ValueError, match=r"torch parameter 1 has shape \(4, 3\) but the matching param has shape"):
        presets.pytorch_state(state_dict, {"bias": good["bias"], "kernel": good["kernel"].T})
    groups = torch.optim.RMSprop(
        [{"params": parameters[:1]}, {"params": parameters[1:], "lr": 0.1}], lr=0.01
    ).state_dict()
    with pytest.raises(ValueError, match=r"torch param groups differ in \['lr'\]"):
        presets.pytorch_state(groups, good)


def test_keras_state_needs_a_built_rmsprop():
    keras = require_keras_on_jax()
    with pytest.raises(ValueError, match="no state yet"):
        presets.keras_state(keras.optimizers.RMSprop(), {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"expected a keras\.optimizers\.RMSprop, got Adam"):
        presets.keras_state(keras.optimizers.Adam(), {"w": jnp.ones(2)})


def _same_shape_params() -> dict[str, np.ndarray]:
    """Three biases of one shape (they share a packed group) and a kernel."""
    rng = np.random.default_rng(3)
    params = {f"b{i}": rng.standard_normal(6).astype(np.float32) for i in range(3)}
    params["kernel"] = rng.standard_normal((4, 6)).astype(np.float32)
    return params


def test_a_torch_state_can_target_the_packed_layout():
    torch = require("torch")
    params = _same_shape_params()
    parameters = [torch.nn.Parameter(torch.from_numpy(params[k].copy())) for k in sorted(params)]
    optimizer = torch.optim.RMSprop(parameters, lr=0.01, momentum=0.9, centered=True)
    for t in range(3):
        for p in parameters:
            p.grad = torch.sin(3 * p.detach() + t)
        optimizer.step()
    now = {k: p.detach().numpy().copy() for k, p in zip(sorted(params), parameters, strict=True)}
    per_leaf = presets.pytorch_state(optimizer.state_dict(), now)
    packed = presets.pytorch_state(optimizer.state_dict(), now, pack_small_leaves=True)
    tx = presets.pytorch(lr=0.01, momentum=0.9, centered=True, pack_small_leaves=True)
    assert isinstance(packed.nu, PackedGroups) and packing_plan(packed).groups[0] == (0, 1, 2)
    assert jax.tree.structure(packed) == jax.tree.structure(tx.init(now))
    for a, b in zip(
        jax.tree.leaves(state_as_float32(per_leaf)), jax.tree.leaves(state_as_float32(packed)), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_a_keras_state_can_target_the_packed_layout():
    keras = require_keras_on_jax()
    params = _same_shape_params()
    variables = [keras.Variable(params[k].copy(), name=k) for k in sorted(params)]
    optimizer = keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.9, centered=True, clipnorm=1.0)
    for t in range(3):
        optimizer.apply_gradients([(np.sin(3 * np.asarray(v.numpy()) + t), v) for v in variables])
    now = {k: np.array(v.numpy()) for k, v in zip(sorted(params), variables, strict=True)}
    per_leaf = presets.keras_state(optimizer, now)
    packed = presets.keras_state(optimizer, now, pack_small_leaves=True)
    tx = presets.keras(learning_rate=0.01, momentum=0.9, centered=True, clipnorm=1.0, pack_small_leaves=True)
    assert jax.tree.structure(packed) == jax.tree.structure(tx.init(now))
    assert packing_plan(packed).groups[0] == (0, 1, 2)
    for a, b in zip(
        jax.tree.leaves(state_as_float32(per_leaf)), jax.tree.leaves(state_as_float32(packed)), strict=True
    ):
        np.testing.assert_array_equal(a, b)
