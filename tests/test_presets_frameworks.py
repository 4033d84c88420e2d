"""Each framework preset against the real library, side by side, every argument.

60 steps of a parameter-dependent gradient that jumps between 1e-3 and 1e3 and is
zero on some entries: at every step and for every leaf,
max |ours - theirs| <= 1e-5 * max |theirs|, and each step's update agrees to 1e-4 of the
leaf's largest update. The "tiny" cases use gradients of 1e-10 to 1e-8, where eps and
its placement decide every step (each also checks that 10x eps would fail).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from framework_runs import (
    HARD,
    TINY,
    assert_trajectories_match,
    keras_variables,
    load_timm_rmsprop_tf,
    moved,
    run_keras_optimizer,
    run_ours,
    run_tf1,
    run_torch_optimizer,
    torch_parameters,
    trajectory_error,
)
from helpers import require, require_keras_on_jax, unavailable

from rmsprop_jax import presets

SCHEDULE = optax.warmup_cosine_decay_schedule(0.0, 0.02, warmup_steps=10, decay_steps=60, end_value=0.001)


def lr_at(t: int) -> float:
    return float(SCHEDULE(t))


def _problem(kwargs: dict):
    """Pops the case's problem: the hard default, or "tiny" gradients where eps decides."""
    return TINY if kwargs.pop("problem", None) == "tiny" else HARD


def _check(ours, theirs, problem, ours_with_10x_eps=None):
    """The preset matches the library; on the tiny problem eps decides (10x eps would not match)."""
    assert moved(theirs, problem) > (1e-3 if problem is HARD else 0.0)
    assert_trajectories_match(ours, theirs, problem=problem)
    if problem is TINY:
        assert trajectory_error(ours_with_10x_eps(), theirs, problem.initial)[1] > 1e-2


TORCH_CASES = {
    "defaults": {},
    "alpha-eps": {"lr": 0.003, "alpha": 0.9, "eps": 1e-6},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "centered-momentum": {"centered": True, "momentum": 0.5, "alpha": 0.95},
    "weight_decay": {"weight_decay": 0.05},
    "weight_decay-momentum-centered": {"weight_decay": 0.05, "momentum": 0.9, "centered": True},
    "maximize": {"maximize": True, "momentum": 0.3},
    "schedule-momentum": {"lr": "schedule", "momentum": 0.9},
    "schedule-weight_decay-centered": {"lr": "schedule", "weight_decay": 0.1, "centered": True},
    "tiny": {"problem": "tiny"},
    "tiny-centered-momentum": {"problem": "tiny", "centered": True, "momentum": 0.9},
}


@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_pytorch_preset_matches_torch(case):
    torch = require("torch")
    kwargs = dict(TORCH_CASES[case])
    problem = _problem(kwargs)
    scheduled = kwargs.get("lr") == "schedule"
    ours_kwargs = {**kwargs, "lr": SCHEDULE} if scheduled else kwargs
    ours = run_ours(presets.pytorch(**ours_kwargs), problem=problem)
    parameters = torch_parameters(problem=problem)
    torch_kwargs = {**kwargs, "lr": lr_at(0)} if scheduled else kwargs
    optimizer = torch.optim.RMSprop(parameters, **torch_kwargs)
    theirs = run_torch_optimizer(optimizer, parameters, lr_at=lr_at if scheduled else None, problem=problem)
    _check(ours, theirs, problem, lambda: run_ours(presets.pytorch(**ours_kwargs, eps=1e-7), problem=problem))


KERAS_CASES = {
    "defaults": {},
    "rho-epsilon": {"learning_rate": 0.01, "rho": 0.8, "epsilon": 1e-4},
    "momentum": {"learning_rate": 0.01, "momentum": 0.9},
    "centered": {"learning_rate": 0.01, "centered": True},
    "centered-momentum": {"learning_rate": 0.005, "centered": True, "momentum": 0.6},
    "weight_decay": {"learning_rate": 0.01, "weight_decay": 0.1},
    "weight_decay-momentum": {"learning_rate": 0.01, "weight_decay": 0.1, "momentum": 0.9},
    "clipnorm": {"learning_rate": 0.01, "clipnorm": 0.5, "momentum": 0.5},
    "clipvalue": {"learning_rate": 0.01, "clipvalue": 0.3},
    "global_clipnorm": {"learning_rate": 0.01, "global_clipnorm": 1.0, "centered": True},
    "keras-schedule": {"learning_rate": "keras-schedule", "momentum": 0.9, "weight_decay": 0.05},
    "tiny": {"problem": "tiny"},
    "tiny-centered-momentum": {"problem": "tiny", "learning_rate": 0.01, "centered": True, "momentum": 0.9},
}


@pytest.mark.parametrize("case", KERAS_CASES, ids=str)
def test_keras_preset_matches_keras(case):
    keras = require_keras_on_jax()
    kwargs = dict(KERAS_CASES[case])
    problem = _problem(kwargs)
    if kwargs.get("learning_rate") == "keras-schedule":
        kwargs["learning_rate"] = keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=10, decay_rate=0.5)
    ours = run_ours(presets.keras(**kwargs), problem=problem)
    theirs = run_keras_optimizer(keras.optimizers.RMSprop(**kwargs), keras_variables(problem=problem), problem=problem)
    _check(ours, theirs, problem, lambda: run_ours(presets.keras(**kwargs, epsilon=1e-6), problem=problem))


def test_keras_preset_rejects_two_clipping_options_like_keras():
    keras = require_keras_on_jax()
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm`") as theirs:
        keras.optimizers.RMSprop(clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="Only one of `clipnorm`, `clipvalue` and `global_clipnorm`") as ours:
        presets.keras(clipnorm=1.0, clipvalue=1.0)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="Only one of"):
        presets.keras(clipvalue=1.0, global_clipnorm=1.0)


TF1_CASES = {
    "defaults": {},
    "decay-epsilon": {"decay": 0.8, "epsilon": 1e-4},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "centered-momentum": {"centered": True, "momentum": 0.7, "decay": 0.95},
    "schedule-momentum": {"learning_rate": "schedule", "momentum": 0.9},
    "tiny": {"problem": "tiny", "decay": 0.5},  # the average falls from 1 below epsilon by step 33
    "tiny-centered-momentum": {"problem": "tiny", "decay": 0.5, "centered": True, "momentum": 0.9},
}


@pytest.mark.parametrize("case", TF1_CASES, ids=str)
def test_tensorflow_v1_preset_matches_tf_compat_v1(case):
    require("tensorflow")
    kwargs = dict(TF1_CASES[case])
    problem = _problem(kwargs)
    scheduled = kwargs.pop("learning_rate", None) == "schedule"
    rate = SCHEDULE if scheduled else 0.01
    ours = run_ours(presets.tensorflow_v1(rate, **kwargs), problem=problem)
    theirs = run_tf1(learning_rate=lr_at if scheduled else 0.01, problem=problem, **kwargs)
    _check(
        ours, theirs, problem, lambda: run_ours(presets.tensorflow_v1(rate, **kwargs, epsilon=1e-9), problem=problem)
    )


TIMM_CASES = {
    "defaults": {},
    "alpha-eps": {"lr": 0.005, "alpha": 0.95, "eps": 1e-3},
    "weight_decay": {"weight_decay": 0.05},
    "decoupled_decay": {"weight_decay": 0.05, "decoupled_decay": True, "momentum": 0.9},
    "corrected_weight_decay": {"weight_decay": 0.05, "decoupled_decay": True, "corrected_weight_decay": True},
    "corrected-schedule": {
        "lr": "schedule",
        "weight_decay": 0.1,
        "decoupled_decay": True,
        "corrected_weight_decay": True,
    },
    "momentum-lr_in_momentum": {"momentum": 0.9},
    "momentum-lr_outside": {"momentum": 0.9, "lr_in_momentum": False},
    "schedule-lr_outside": {"lr": "schedule", "momentum": 0.9, "lr_in_momentum": False},
    "centered": {"centered": True, "momentum": 0.5},
    "caution": {"momentum": 0.9, "caution": True},
    "caution-lr_outside-centered": {"momentum": 0.9, "caution": True, "lr_in_momentum": False, "centered": True},
    "caution-without-momentum": {"caution": True},
    "tiny": {"problem": "tiny", "alpha": 0.5},  # the average falls from 1 below eps by step 33
    "tiny-momentum-lr_outside": {"problem": "tiny", "alpha": 0.5, "momentum": 0.9, "lr_in_momentum": False},
}


@pytest.mark.parametrize("case", TIMM_CASES, ids=str)
def test_timm_preset_matches_timm_rmsprop_tf(case):
    require("torch")
    try:
        rmsprop_tf = load_timm_rmsprop_tf()
    except ImportError as error:
        unavailable(str(error))
    kwargs = dict(TIMM_CASES[case])
    problem = _problem(kwargs)
    scheduled = kwargs.get("lr") == "schedule"
    peak = 0.02
    if scheduled:
        ours = run_ours(presets.timm(**{**kwargs, "lr": SCHEDULE}, max_lr=peak))
        kwargs["lr"] = peak  # timm snapshots the constructor lr as max_lr; the scheduler sets the rest
    else:
        ours = run_ours(presets.timm(**kwargs), problem=problem)
    parameters = torch_parameters(problem=problem)
    theirs = run_torch_optimizer(
        rmsprop_tf(parameters, foreach=False, **kwargs),
        parameters,
        lr_at=lr_at if scheduled else None,
        problem=problem,
    )
    _check(ours, theirs, problem, lambda: run_ours(presets.timm(**kwargs, eps=1e-9), problem=problem))


def test_timm_foreach_implementation_agrees_too():
    require("torch")
    try:
        rmsprop_tf = load_timm_rmsprop_tf()
    except ImportError as error:
        unavailable(str(error))
    kwargs = {"momentum": 0.9, "centered": True, "weight_decay": 0.05, "decoupled_decay": True}
    parameters = torch_parameters()
    theirs = run_torch_optimizer(rmsprop_tf(parameters, foreach=True, **kwargs), parameters)
    assert_trajectories_match(run_ours(presets.timm(**kwargs, foreach=True)), theirs)


OPTAX_CASES = {
    "defaults": {},
    "everything": {
        "decay": 0.95,
        "eps": 1e-6,
        "initial_scale": 0.1,
        "eps_in_sqrt": False,
        "centered": True,
        "momentum": 0.9,
        "nesterov": True,
        "bias_correction": True,
    },
    "schedule": {"momentum": 0.5},
}


@pytest.mark.parametrize("case", OPTAX_CASES, ids=str)
def test_optax_preset_matches_optax(case):
    kwargs = OPTAX_CASES[case]
    learning_rate = SCHEDULE if case == "schedule" else 0.01
    ours = run_ours(presets.optax(learning_rate, **kwargs))
    theirs = run_ours(optax.rmsprop(learning_rate, **kwargs))
    assert moved(theirs) > 1e-3
    assert_trajectories_match(ours, theirs)


def _constant_gradient_run(step, steps=200):
    rng = np.random.default_rng(0)
    g = rng.uniform(0.1, 10.0, 2000).astype(np.float32)
    return [step(g) for _ in range(steps)][-1]


def _stepper(tx):
    """A step function g -> params for `_constant_gradient_run`, from zero params."""
    params, state = jnp.zeros(2000), tx.init(jnp.zeros(2000))

    def step(g):
        nonlocal params, state
        updates, state = tx.update(jnp.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        return np.asarray(params)

    return step


def test_torch_centered_nan_is_clamped_here():
    torch = require("torch")
    parameter = torch.nn.Parameter(torch.zeros(2000))
    optimizer = torch.optim.RMSprop([parameter], lr=0.01, alpha=0.9, centered=True)

    def torch_step(g):
        parameter.grad = torch.from_numpy(g)
        optimizer.step()
        return parameter.detach().numpy().copy()

    theirs = _constant_gradient_run(torch_step)
    ours = _constant_gradient_run(_stepper(presets.pytorch(lr=0.01, alpha=0.9, centered=True)))
    assert np.isnan(theirs).mean() > 0.01  # torch: sqrt of a variance rounded below zero
    assert np.all(np.isfinite(ours))


def test_keras_centered_nan_is_clamped_here():
    keras = require_keras_on_jax()
    variable = keras.Variable(np.zeros(2000, np.float32))
    optimizer = keras.optimizers.RMSprop(learning_rate=0.01, rho=0.9, centered=True, epsilon=1e-7)

    def keras_step(g):
        optimizer.apply_gradients([(jnp.asarray(g), variable)])
        return np.array(variable.numpy())

    theirs = _constant_gradient_run(keras_step)
    ours = _constant_gradient_run(_stepper(presets.keras(learning_rate=0.01, rho=0.9, centered=True, epsilon=1e-7)))
    assert np.isnan(theirs).mean() > 0.01
    assert np.all(np.isfinite(ours))
