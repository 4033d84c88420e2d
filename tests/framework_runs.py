"""One optimization problem, run step by step in rmsprop_jax and in the reference
frameworks (torch, Keras 3 on JAX, TF1, timm), returning parameter trajectories.

The gradient depends on the parameters, jumps in magnitude between 1e-3 and 1e3
from step to step, and is exactly zero on some entries. It is computed in numpy
from each framework's own float32 parameters, so each run follows its own path.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import sys
import types
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

STEPS = 60
NAMES = ("bias", "kernel")  # jax.tree.leaves order of the params dict
_RNG = np.random.default_rng(1234)
INITIAL = {
    "bias": _RNG.standard_normal(3).astype(np.float32),
    "kernel": _RNG.standard_normal((4, 3)).astype(np.float32),
}
_TARGET = {k: _RNG.standard_normal(v.shape) for k, v in INITIAL.items()}
_ZERO = {k: _RNG.random(v.shape) < 0.25 for k, v in INITIAL.items()}
SCALES = 10.0 ** _RNG.choice([-3, -2, -1, 0, 1, 2, 3], size=400)


class Problem(NamedTuple):
    """Where the params start and the gradient's scale at each step."""

    initial: dict[str, np.ndarray]
    scales: np.ndarray


HARD = Problem(INITIAL, SCALES)
# Gradients of about 1e-10 to 1e-8 from params at zero: the square average stays far
# below the frameworks' eps, so eps and where it enters decide every step.
TINY = Problem({k: np.zeros_like(v) for k, v in INITIAL.items()}, 10.0 ** _RNG.uniform(-10, -8, size=400))

Trajectory = list[dict[str, np.ndarray]]


def gradient(params: dict[str, np.ndarray], t: int, problem: Problem = HARD) -> dict[str, np.ndarray]:
    """The gradient at step t for the given float32 params."""
    out = {}
    for name in NAMES:
        p = np.asarray(params[name], np.float64)
        g = problem.scales[t] * (p - _TARGET[name] + 0.5 * np.sin(3.0 * p + t))
        out[name] = np.where(_ZERO[name], 0.0, g).astype(np.float32)
    return out


def run_ours(
    tx: optax.GradientTransformation,
    steps: int = STEPS,
    state: object = None,
    params: dict | None = None,
    start: int = 0,
    problem: Problem = HARD,
) -> Trajectory:
    params = {k: jnp.asarray(v) for k, v in (params or problem.initial).items()}
    state = tx.init(params) if state is None else state
    update = jax.jit(tx.update)
    trajectory = []
    for t in range(start, start + steps):
        grads = gradient({k: np.asarray(v) for k, v in params.items()}, t, problem)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append({k: np.asarray(v) for k, v in params.items()})
    return trajectory


def torch_parameters(params: dict[str, np.ndarray] | None = None, problem: Problem = HARD) -> list:
    import torch

    return [torch.nn.Parameter(torch.from_numpy(np.array((params or problem.initial)[k]))) for k in NAMES]


def run_torch_optimizer(
    optimizer,
    parameters: list,
    steps: int = STEPS,
    lr_at: Callable[[int], float] | None = None,
    start: int = 0,
    problem: Problem = HARD,
    clip_norm: float | None = None,
) -> Trajectory:
    """Steps a torch optimizer over `parameters` (in NAMES order), after
    ``torch.nn.utils.clip_grad_norm_(parameters, clip_norm)`` when ``clip_norm`` is given."""
    import torch

    trajectory = []
    for t in range(start, start + steps):
        grads = gradient({k: p.detach().numpy() for k, p in zip(NAMES, parameters, strict=True)}, t, problem)
        for name, p in zip(NAMES, parameters, strict=True):
            p.grad = torch.from_numpy(grads[name])
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(t)
        optimizer.step()
        trajectory.append({k: p.detach().numpy().copy() for k, p in zip(NAMES, parameters, strict=True)})
    return trajectory


def keras_variables(params: dict[str, np.ndarray] | None = None, problem: Problem = HARD) -> list:
    import keras

    return [keras.Variable(np.array((params or problem.initial)[k]), name=k) for k in NAMES]


def run_keras_optimizer(
    optimizer, variables: list, steps: int = STEPS, start: int = 0, problem: Problem = HARD
) -> Trajectory:
    trajectory = []
    for t in range(start, start + steps):
        grads = gradient({k: v.numpy() for k, v in zip(NAMES, variables, strict=True)}, t, problem)
        optimizer.apply_gradients([(jnp.asarray(grads[k]), v) for k, v in zip(NAMES, variables, strict=True)])
        trajectory.append({k: np.array(v.numpy()) for k, v in zip(NAMES, variables, strict=True)})
    return trajectory


def run_tf1(
    steps: int = STEPS, learning_rate: float | Callable[[int], float] = 0.01, problem: Problem = HARD, **kwargs
) -> Trajectory:
    """tf.compat.v1.train.RMSPropOptimizer, eagerly; a callable rate is read each step."""
    import tensorflow as tf

    variables = [tf.Variable(np.array(problem.initial[k])) for k in NAMES]
    step = [0]
    rate = (lambda: learning_rate(step[0])) if callable(learning_rate) else learning_rate
    optimizer = tf.compat.v1.train.RMSPropOptimizer(rate, **kwargs)
    trajectory = []
    for t in range(steps):
        step[0] = t
        grads = gradient({k: v.numpy() for k, v in zip(NAMES, variables, strict=True)}, t, problem)
        optimizer.apply_gradients([(tf.constant(grads[k]), v) for k, v in zip(NAMES, variables, strict=True)])
        trajectory.append({k: v.numpy().copy() for k, v in zip(NAMES, variables, strict=True)})
    return trajectory


def load_timm_rmsprop_tf() -> type:
    """timm's RMSpropTF, loaded from the installed files without importing the
    `timm` package (whose __init__ needs torchvision)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("timm is not installed (pip install --no-deps timm==1.0.31)")
    optim_dir = pathlib.Path(next(iter(spec.submodule_search_locations))) / "optim"
    package = types.ModuleType("_timm_optim_standalone")
    package.__path__ = [str(optim_dir)]
    sys.modules.setdefault(package.__name__, package)
    return importlib.import_module(f"{package.__name__}.rmsprop_tf").RMSpropTF


def load_sb3_rmsprop_tf_like() -> type:
    """Stable-Baselines3's RMSpropTFLike, loaded from its installed file (it imports only torch)."""
    spec = importlib.util.find_spec("stable_baselines3")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("stable-baselines3 is not installed (it is in the test extras)")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "common" / "sb2_compat" / "rmsprop_tf_like.py"
    module_spec = importlib.util.spec_from_file_location("_sb3_rmsprop_tf_like", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.RMSpropTFLike


def trajectory_error(
    ours: Trajectory, theirs: Trajectory, initial: dict[str, np.ndarray] = INITIAL
) -> tuple[float, float]:
    """The worst relative errors over the steps and leaves: of the params (``max |ours - theirs|
    / max |theirs|``) and of each step's update (the change of the params, against the
    largest change of that leaf at that step, after allowing two float32 spacings of the params)."""
    assert len(ours) == len(theirs)
    worst_params = worst_updates = 0.0
    before_ours = before_theirs = {k: np.asarray(v, np.float64) for k, v in initial.items()}
    for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for name in NAMES:
            assert np.all(np.isfinite(b[name])), f"reference is not finite at step {t}, leaf {name}"
            after_ours, after_theirs = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
            worst_params = max(worst_params, np.abs(after_ours - after_theirs).max() / np.abs(after_theirs).max())
            step_ours, step_theirs = after_ours - before_ours[name], after_theirs - before_theirs[name]
            rounding = 2 * np.spacing(np.abs(after_theirs).max().astype(np.float32))
            error = max(np.abs(step_ours - step_theirs).max() - rounding, 0.0)
            worst_updates = max(worst_updates, error / max(np.abs(step_theirs).max(), 1e-38))
        before_ours = {k: np.asarray(v, np.float64) for k, v in a.items()}
        before_theirs = {k: np.asarray(v, np.float64) for k, v in b.items()}
    return float(worst_params), float(worst_updates)


def assert_trajectories_match(
    ours: Trajectory,
    theirs: Trajectory,
    rel: float = 1e-5,
    update_rel: float = 1e-4,
    problem: Problem = HARD,
) -> None:
    """At every step and for every leaf: max |ours - theirs| <= rel * max |theirs|, and each
    step's update agrees to ``update_rel`` of the leaf's largest update (:func:`trajectory_error`)."""
    params_error, updates_error = trajectory_error(ours, theirs, problem.initial)
    assert params_error <= rel, f"params: max|ours - theirs| / max|theirs| = {params_error:.3g} > {rel}"
    assert updates_error <= update_rel, f"updates: relative error {updates_error:.3g} > {update_rel}"


def moved(trajectory: Trajectory, problem: Problem = HARD) -> float:
    """How far the params travelled: guards against comparing two runs that did nothing."""
    return max(np.abs(trajectory[-1][k] - problem.initial[k]).max() for k in NAMES)
