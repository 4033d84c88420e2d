"""Continue a torch or Keras run in rmsprop_jax mid-training; match the original."""

from __future__ import annotations

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

from rmsprop_jax import RmsPropState, presets

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
