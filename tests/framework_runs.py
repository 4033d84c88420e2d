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

Trajectory = list[dict[str, np.ndarray]]


def gradient(params: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """The gradient at step t for the given float32 params."""
    out = {}
    for name in NAMES:
        p = np.asarray(params[name], np.float64)
        g = SCALES[t] * (p - _TARGET[name] + 0.5 * np.sin(3.0 * p + t))
        out[name] = np.where(_ZERO[name], 0.0, g).astype(np.float32)
    return out


def run_ours(
    tx: optax.GradientTransformation,
    steps: int = STEPS,
    state: object = None,
    params: dict | None = None,
    start: int = 0,
) -> Trajectory:
    params = {k: jnp.asarray(v) for k, v in (params or INITIAL).items()}
    state = tx.init(params) if state is None else state
    update = jax.jit(tx.update)
    trajectory = []
    for t in range(start, start + steps):
        grads = gradient({k: np.asarray(v) for k, v in params.items()}, t)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append({k: np.asarray(v) for k, v in params.items()})
    return trajectory


def torch_parameters(params: dict[str, np.ndarray] | None = None) -> list:
    import torch

    return [torch.nn.Parameter(torch.from_numpy(np.array((params or INITIAL)[k]))) for k in NAMES]


def run_torch_optimizer(
    optimizer, parameters: list, steps: int = STEPS, lr_at: Callable[[int], float] | None = None, start: int = 0
) -> Trajectory:
    """Steps a torch optimizer over `parameters` (in NAMES order)."""
    import torch

    trajectory = []
    for t in range(start, start + steps):
        grads = gradient({k: p.detach().numpy() for k, p in zip(NAMES, parameters, strict=True)}, t)
        for name, p in zip(NAMES, parameters, strict=True):
            p.grad = torch.from_numpy(grads[name])
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(t)
        optimizer.step()
        trajectory.append({k: p.detach().numpy().copy() for k, p in zip(NAMES, parameters, strict=True)})
    return trajectory


def keras_variables(params: dict[str, np.ndarray] | None = None) -> list:
    import keras

    return [keras.Variable(np.array((params or INITIAL)[k]), name=k) for k in NAMES]


def run_keras_optimizer(optimizer, variables: list, steps: int = STEPS, start: int = 0) -> Trajectory:
    trajectory = []
    for t in range(start, start + steps):
        grads = gradient({k: v.numpy() for k, v in zip(NAMES, variables, strict=True)}, t)
        optimizer.apply_gradients([(jnp.asarray(grads[k]), v) for k, v in zip(NAMES, variables, strict=True)])
        trajectory.append({k: np.array(v.numpy()) for k, v in zip(NAMES, variables, strict=True)})
    return trajectory


def run_tf1(steps: int = STEPS, learning_rate: float | Callable[[int], float] = 0.01, **kwargs) -> Trajectory:
    """tf.compat.v1.train.RMSPropOptimizer, eagerly; a callable rate is read each step."""
    import tensorflow as tf

    variables = [tf.Variable(np.array(INITIAL[k])) for k in NAMES]
    step = [0]
    rate = (lambda: learning_rate(step[0])) if callable(learning_rate) else learning_rate
    optimizer = tf.compat.v1.train.RMSPropOptimizer(rate, **kwargs)
    trajectory = []
    for t in range(steps):
        step[0] = t
        grads = gradient({k: v.numpy() for k, v in zip(NAMES, variables, strict=True)}, t)
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


def assert_trajectories_match(ours: Trajectory, theirs: Trajectory, rel: float = 1e-5) -> None:
    """At every step and for every leaf: max |ours - theirs| <= rel * max |theirs|."""
    assert len(ours) == len(theirs)
    for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for name in NAMES:
            assert np.all(np.isfinite(b[name])), f"reference is not finite at step {t}, leaf {name}"
            error = np.abs(a[name] - b[name]).max()
            scale = np.abs(b[name]).max()
            assert error <= rel * scale, (
                f"step {t}, leaf {name}: max|ours - theirs| = {error:.3g} > {rel} * {scale:.3g}"
            )


def moved(trajectory: Trajectory) -> float:
    """How far the params travelled: guards against comparing two runs that did nothing."""
    return max(np.abs(trajectory[-1][k] - INITIAL[k]).max() for k in NAMES)
