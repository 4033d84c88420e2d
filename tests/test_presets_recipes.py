"""presets.RL_RECIPES: each published RL setting against its source, run side by side.

Where the source runs here (torch, Stable-Baselines3's own RMSpropTFLike, TF1), the recipe's
optimizer must follow the source's trajectory, clipping and schedule included, to 1e-5 at
every step; deep_q_rl's Theano update is transcribed in NumPy from its formula.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest
from framework_runs import (
    HARD,
    NAMES,
    STEPS,
    assert_trajectories_match,
    gradient,
    load_sb3_rmsprop_tf_like,
    moved,
    run_ours,
    run_tf1,
    run_torch_optimizer,
    torch_parameters,
)
from helpers import ROOT, require

from rmsprop_jax import presets
from rmsprop_jax.presets import recipes


def _rl_zoo_linear(initial: float):
    """RL Zoo's ``lin_<lr>``: lr times the progress remaining, read once per rollout, after the
    rollout's steps are counted (an A2C update is one optimizer step: step t sees 1 - (t+1)/T)."""
    return lambda count: initial * (1.0 - (count + 1) / (STEPS + 1))


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "rl_zoo_linear"])
def test_sb3_a2c_matches_torch_rmsprop_after_clip_grad_norm(scheduled):
    torch = require("torch")
    recipe = presets.RL_RECIPES["sb3_a2c"]
    lr = recipe.arguments["lr"]
    overrides = {"lr": _rl_zoo_linear(lr)} if scheduled else {}
    ours = run_ours(recipe.optimizer(**overrides))
    parameters = torch_parameters()
    optimizer = torch.optim.RMSprop(parameters, lr=lr, alpha=0.99, eps=1e-5)
    theirs = run_torch_optimizer(
        optimizer, parameters, lr_at=_rl_zoo_linear(lr) if scheduled else None, clip_norm=recipe.clip_global_norm
    )
    assert moved(theirs) > 1e-3
    assert_trajectories_match(ours, theirs)


def test_the_clipping_is_needed_for_the_a2c_match():
    """Control: without clip_grad_norm_ on the torch side the same comparison fails."""
    torch = require("torch")
    recipe = presets.RL_RECIPES["sb3_a2c"]
    parameters = torch_parameters()
    theirs = run_torch_optimizer(torch.optim.RMSprop(parameters, lr=7e-4, alpha=0.99, eps=1e-5), parameters)
    with pytest.raises(AssertionError):
        assert_trajectories_match(run_ours(recipe.optimizer()), theirs)


@pytest.mark.parametrize(
    "extra", [{}, {"momentum": 0.9}, {"momentum": 0.9, "scheduled": True}], ids=["plain", "momentum", "momentum_sched"]
)
def test_sb3_rmsprop_tf_like_matches_stable_baselines3s_own_optimizer(extra):
    require("torch")
    require("stable_baselines3")
    rmsprop_tf_like = load_sb3_rmsprop_tf_like()
    recipe = presets.RL_RECIPES["sb3_rmsprop_tf_like"]
    lr = recipe.arguments["lr"]
    scheduled = extra.get("scheduled", False)
    momentum = extra.get("momentum", 0.0)
    overrides = {"momentum": momentum, **({"lr": _rl_zoo_linear(lr)} if scheduled else {})}
    ours = run_ours(recipe.optimizer(**overrides))
    parameters = torch_parameters()
    optimizer = rmsprop_tf_like(parameters, lr=lr, alpha=0.99, eps=1e-5, momentum=momentum)
    theirs = run_torch_optimizer(
        optimizer, parameters, lr_at=_rl_zoo_linear(lr) if scheduled else None, clip_norm=recipe.clip_global_norm
    )
    assert moved(theirs) > 1e-3
    assert_trajectories_match(ours, theirs)


def test_tensorflow_v1_with_momentum_does_not_reproduce_rmsprop_tf_like():
    """The issue's finding, kept as a control: TF1's lr-in-momentum differs once lr changes."""
    require("torch")
    require("stable_baselines3")
    parameters = torch_parameters()
    schedule = _rl_zoo_linear(7e-4)
    optimizer = load_sb3_rmsprop_tf_like()(parameters, lr=7e-4, alpha=0.99, eps=1e-5, momentum=0.9)
    theirs = run_torch_optimizer(optimizer, parameters, lr_at=schedule, clip_norm=0.5)
    tf1_style = optax.chain(
        optax.clip_by_global_norm(0.5), presets.tensorflow_v1(schedule, decay=0.99, momentum=0.9, epsilon=1e-5)
    )
    with pytest.raises(AssertionError):
        assert_trajectories_match(run_ours(tf1_style), theirs)


@pytest.mark.parametrize("name", ["minatar_dqn", "a3c_shared_rmsprop"])
def test_torch_recipes_match_torch_rmsprop(name):
    torch = require("torch")
    recipe = presets.RL_RECIPES[name]
    parameters = torch_parameters()
    optimizer = torch.optim.RMSprop(parameters, **recipe.arguments)
    theirs = run_torch_optimizer(optimizer, parameters)
    assert_trajectories_match(run_ours(recipe.optimizer()), theirs)


def test_dopamine_dqn_matches_tf1_centered_rmsprop():
    require("tensorflow")
    recipe = presets.RL_RECIPES["dopamine_dqn"]
    theirs = run_tf1(learning_rate=2.5e-4, decay=0.95, momentum=0.0, epsilon=1e-5, centered=True)
    assert_trajectories_match(run_ours(recipe.optimizer()), theirs)


def _deepmind_rmsprop(steps: int = STEPS, lr: float = 2.5e-4, rho: float = 0.95, eps: float = 0.01):
    """deep_q_rl's update as its docstring and code state it, in float32 NumPy:
    acc_grad = rho acc_grad + (1 - rho) g; acc_rms = rho acc_rms + (1 - rho) g^2;
    p -= lr g / sqrt(acc_rms - acc_grad^2 + eps)."""
    params = {k: np.array(v, np.float32) for k, v in HARD.initial.items()}
    acc_grad = {k: np.zeros_like(v) for k, v in params.items()}
    acc_rms = {k: np.zeros_like(v) for k, v in params.items()}
    trajectory = []
    for t in range(steps):
        grads = gradient(params, t)
        for k in NAMES:
            g = grads[k]
            acc_grad[k] = np.float32(rho) * acc_grad[k] + np.float32(1 - rho) * g
            acc_rms[k] = np.float32(rho) * acc_rms[k] + np.float32(1 - rho) * g * g
            params[k] = params[k] - np.float32(lr) * g / np.sqrt(acc_rms[k] - acc_grad[k] ** 2 + np.float32(eps))
        trajectory.append({k: v.copy() for k, v in params.items()})
    return trajectory


def test_deep_q_rl_deepmind_rmsprop_is_presets_dqn2015():
    recipe = presets.RL_RECIPES["deep_q_rl"]
    assert recipe.preset == "dqn2015" and dict(recipe.arguments) == dict(presets.CONVENTIONS["dqn2015"].defaults)
    assert_trajectories_match(run_ours(recipe.optimizer()), _deepmind_rmsprop())
    with pytest.raises(AssertionError):  # control: eps outside the root (MinAtar's form) is another optimizer
        assert_trajectories_match(run_ours(presets.RL_RECIPES["minatar_dqn"].optimizer()), _deepmind_rmsprop())


def test_every_recipe_is_checked_and_its_call_builds_the_same_optimizer():
    import jax
    import jax.numpy as jnp

    checked_here = {"sb3_a2c", "sb3_rmsprop_tf_like", "deep_q_rl", "dopamine_dqn", "minatar_dqn",
                    "a3c_shared_rmsprop"}  # fmt: skip
    assert set(presets.RL_RECIPES) == checked_here
    params = {"w": jnp.ones((3, 2))}
    grads = {"w": jnp.arange(6.0).reshape(3, 2)}
    for recipe in presets.RL_RECIPES.values():
        built = eval(recipe.call(), {"presets": presets, "optax": optax})  # the table's text, as a user pastes it
        for tx in (built, recipe.optimizer()):
            assert jax.tree.structure(tx.init(params)) == jax.tree.structure(recipe.optimizer().init(params))
        np.testing.assert_array_equal(
            built.update(grads, built.init(params), params)[0]["w"],
            recipe.optimizer().update(grads, recipe.optimizer().init(params), params)[0]["w"],
        )
    table = recipes.recipes_table()
    assert all(f"`{recipe.call()}`" in table for recipe in presets.RL_RECIPES.values())
    assert table in (ROOT / "docs" / "reinforcement_learning.md").read_text()
