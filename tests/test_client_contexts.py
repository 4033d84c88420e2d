"""Every factory and preset, with every option, built and stepped where client code builds it.

PureJaxRL builds its optimizer inside a jitted, vmapped ``train``; meta-learning code builds
it inside the function it differentiates; Flax NNX code builds ``nnx.Optimizer`` inside
``nnx.jit``. Each optimizer below is built *inside* each of ``jax.jit``, ``jax.vmap``, a
``lax.scan`` body, ``jax.eval_shape``, ``nnx.jit`` and ``jax.grad`` (through
``optax.inject_hyperparams``), stepped there, and compared with the same steps run eagerly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import presets

STEPS = 4
SCHEDULE = optax.linear_schedule(0.05, 0.01, 5)


def _decay_matrices(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


# (factory, kwargs): every factory and preset, and every option of the core. Centered with
# bias correction uses eps 1e-2: at step 1 its corrected variance is 0 in exact arithmetic, so
# with eps 1e-8 the step is 1e4 * g times rounding noise in any context.
CONFIGS: dict[str, tuple[Callable, dict]] = {
    "rmsprop": (rmsprop_jax.rmsprop, {"learning_rate": 0.01}),
    "momentum_nesterov": (rmsprop_jax.rmsprop, {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True}),
    "centered_bias_correction": (
        rmsprop_jax.rmsprop,
        {"learning_rate": 0.01, "centered": True, "bias_correction": True, "momentum": 0.9, "eps": 1e-2},
    ),
    "caution": (rmsprop_jax.rmsprop, {"learning_rate": 0.01, "momentum": 0.9, "caution": True}),
    "weight_decay_mask_schedules": (
        rmsprop_jax.rmsprop,
        {
            "learning_rate": SCHEDULE,
            "weight_decay": SCHEDULE,
            "decoupled_weight_decay": True,
            "weight_decay_mask": _decay_matrices,
        },
    ),
    "torch_conventions": (
        rmsprop_jax.rmsprop,
        {
            "learning_rate": SCHEDULE,
            "eps_in_sqrt": False,
            "lr_in_momentum": False,
            "momentum": 0.9,
            "maximize": True,
            "initial_scale": 0.1,
        },
    ),
    "bfloat16_state": (
        rmsprop_jax.rmsprop,
        {"learning_rate": 0.01, "momentum": 0.9, "centered": True, "state_dtype": "bfloat16"},
    ),
    "float16_state": (rmsprop_jax.rmsprop, {"learning_rate": 0.01, "momentum": 0.9, "state_dtype": "float16"}),
    "8bit_momentum": (rmsprop_jax.rmsprop, {"learning_rate": 0.01, "momentum": 0.9, "state_dtype": "8bit"}),
    "8bit_centered": (rmsprop_jax.rmsprop, {"learning_rate": 0.01, "centered": True, "state_dtype": "8bit"}),
    "packed": (rmsprop_jax.rmsprop, {"learning_rate": 0.01, "momentum": 0.9, "pack_small_leaves": True}),
    "packed_centered_bfloat16": (
        rmsprop_jax.rmsprop,
        {
            "learning_rate": 0.01,
            "centered": True,
            "momentum": 0.9,
            "state_dtype": "bfloat16",
            "pack_small_leaves": True,
        },
    ),
    "scale_by_rms": (rmsprop_jax.scale_by_rms, {"centered": True, "bias_correction": True, "eps": 1e-2}),
    "pytorch": (presets.pytorch, {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.01}),
    "keras": (
        presets.keras,
        {"learning_rate": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.01, "global_clipnorm": 1.0},
    ),
    "tensorflow_v1": (presets.tensorflow_v1, {"learning_rate": 0.01, "momentum": 0.9, "centered": True}),
    "timm": (
        presets.timm,
        {
            "lr": SCHEDULE,
            "max_lr": 0.05,
            "momentum": 0.9,
            "decoupled_decay": True,
            "corrected_weight_decay": True,
            "weight_decay": 0.01,
            "caution": True,
        },
    ),
    "optax": (presets.optax, {"learning_rate": 0.01, "centered": True}),
    "hinton2012": (presets.hinton2012, {"learning_rate": 0.01}),
    "graves2013": (presets.graves2013, {}),
    "dqn2015": (presets.dqn2015, {}),
    "dqn2015_8bit_packed": (presets.dqn2015, {"state_dtype": "8bit", "pack_small_leaves": True}),
}
NARROW = {"bfloat16_state", "float16_state", "8bit_momentum", "8bit_centered", "packed_centered_bfloat16",
          "dqn2015_8bit_packed"}  # fmt: skip


def make(name: str) -> optax.GradientTransformation:
    factory, kwargs = CONFIGS[name]
    tx = factory(**kwargs)
    if factory is rmsprop_jax.scale_by_rms:  # no learning rate of its own
        tx = optax.chain(tx, optax.scale_by_learning_rate(0.01))
    return tx


def initial_params() -> dict[str, jax.Array]:
    """A 64 x 64 leaf (8-bit tiles) and two 64-entry leaves (packed together with momentum)."""
    return {
        "w": jax.random.normal(jax.random.PRNGKey(0), (64, 64)),
        "b": jnp.linspace(-1.0, 1.0, 64),
        "c": jnp.linspace(1.0, 2.0, 64),
    }


def gradient(params, t):
    return jax.tree.map(lambda p: jnp.sin(p * (t + 1.0)) + 0.1 * p, params)


def run(name: str, params):
    """Builds the optimizer and takes STEPS steps: the body every context runs."""
    tx = make(name)
    state = tx.init(params)
    for t in range(STEPS):
        updates, state = tx.update(gradient(params, t), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def assert_same_run(name: str, got, expected) -> None:
    """The params equal the eager run's up to XLA's fusion (FMA) rounding, amplified at most by a
    16-bit or 8-bit state's rounding: relative to how far the params moved."""
    start = initial_params()
    moved = max(
        float(jnp.max(jnp.abs(e - s))) for e, s in zip(jax.tree.leaves(expected), jax.tree.leaves(start), strict=True)
    )
    assert moved > 1e-3
    tolerance = (1e-2 if name in NARROW else 1e-3) * moved
    for path_value, e in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(expected), strict=True):
        path, g = path_value
        error = float(jnp.max(jnp.abs(g - e)))
        assert error <= tolerance, f"{name} {jax.tree_util.keystr(path)}: {error:.3g} > {tolerance:.3g}"


@pytest.fixture(scope="module")
def eager():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = run(name, initial_params())[0]
        return cache[name]

    return get


@pytest.mark.parametrize("name", CONFIGS)
def test_building_stages_no_operation(name):
    """The root cause of the traced-build failures: a construction-time check that ran a ``jnp``
    operation, which a trace stages. Building must put nothing into a jaxpr."""
    jaxpr = jax.make_jaxpr(lambda x: (make(name), x)[1])(1.0)
    assert jaxpr.eqns == []


def test_concrete_array_hyperparameters_stage_nothing_either():
    """Under a trace even a concrete jax.Array's ``== 0`` is staged: the checks read it with NumPy."""
    a = jnp.asarray
    builds = [
        lambda: presets.dqn2015(eps=a(0.01), decay=a(0.95)),
        lambda: rmsprop_jax.rmsprop(a(0.1), decay=a(0.9), bias_correction=True, momentum=a(0.9)),
        lambda: presets.keras(clipnorm=a(1.0)),
        lambda: presets.keras(global_clipnorm=a(1.0), centered=True),
        lambda: rmsprop_jax.clipping.clip_by_leaf_norm(a(1.0)),
        lambda: presets.timm(
            lr=SCHEDULE, max_lr=a(0.05), decoupled_decay=True, corrected_weight_decay=True, weight_decay=a(0.01)
        ),
    ]
    for build in builds:
        assert jax.make_jaxpr(lambda x, build=build: (build(), x)[1])(1.0).eqns == []
    zero = a(0.0)  # concrete: made outside the trace (one made inside is traced, and accepted)
    with pytest.raises(ValueError, match=r"Invalid max_lr value: 0\.0"):
        jax.jit(lambda x: (presets.timm(lr=SCHEDULE, max_lr=zero, decoupled_decay=True,
                                        corrected_weight_decay=True, weight_decay=0.01), x)[1])(1.0)  # fmt: skip
    with pytest.raises(ValueError, match=r"Invalid clipnorm value: 0\.0"):
        jax.jit(lambda x: (presets.keras(clipnorm=zero), x)[1])(1.0)


def test_a_construction_check_still_refuses_concrete_bad_values_inside_jit():
    """Concrete Python numbers are checked at construction, traced or not around them."""

    def build(x):
        presets.dqn2015(eps=0.0)
        return x

    with pytest.raises(ValueError, match=r"Invalid eps value: 0\.0"):
        jax.jit(build)(1.0)
    with pytest.raises(ValueError, match=r"Invalid decay value: 1\.0"):
        jax.eval_shape(lambda x: (rmsprop_jax.rmsprop(0.1, decay=1.0, bias_correction=True), x)[1], 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_built_and_stepped_inside_jit(name, eager):
    assert_same_run(name, jax.jit(lambda p: run(name, p)[0])(initial_params()), eager(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_built_and_stepped_inside_a_scan_body(name, eager):
    def steps(params):
        state = make(name).init(params)

        def body(carry, t):
            params, state = carry
            tx = make(name)  # built in the body, as a scanned training step builds it
            updates, state = tx.update(gradient(params, t), state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(body, (params, state), jnp.arange(STEPS, dtype=jnp.float32))
        return params

    assert_same_run(name, jax.jit(steps)(initial_params()), eager(name))


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_built_and_stepped_inside_vmap(name, eager):
    """Over a batch of two: the second member starts elsewhere, so the batch is not one run twice."""
    start = initial_params()
    batch = jax.tree.map(lambda p: jnp.stack([p * 0.5, p]), start)
    got = jax.vmap(lambda p: run(name, p)[0])(batch)
    assert_same_run(name, jax.tree.map(lambda x: x[1], got), eager(name))
    other = run(name, jax.tree.map(lambda p: p * 0.5, start))[0]
    for g, e in zip(jax.tree.leaves(jax.tree.map(lambda x: x[0], got)), jax.tree.leaves(other), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-2 if name in NARROW else 1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CONFIGS)
def test_built_and_stepped_inside_eval_shape(name):
    params = initial_params()
    abstract = jax.eval_shape(lambda p: run(name, p), params)
    concrete = run(name, params)
    assert jax.tree.structure(abstract) == jax.tree.structure(concrete)
    for a, c in zip(jax.tree.leaves(abstract), jax.tree.leaves(concrete), strict=True):
        assert (a.shape, a.dtype) == (c.shape, c.dtype)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_nnx_optimizer_built_and_stepped_inside_nnx_jit(name):
    nnx = pytest.importorskip("flax.nnx")

    class Model(nnx.Module):
        def __init__(self):
            for key, value in initial_params().items():
                setattr(self, key, nnx.Param(value))

    def loss(model):
        return jnp.sum(jnp.sin(model.w[...])) + jnp.sum(model.b[...] ** 2) + jnp.sum(jnp.cos(model.c[...]))

    @nnx.jit
    def create():
        model = Model()
        return model, nnx.Optimizer(model, make(name), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        optimizer.update(model, nnx.grad(loss)(model))

    model, optimizer = create()
    reference = Model()
    eager_optimizer = nnx.Optimizer(reference, make(name), wrt=nnx.Param)
    for _ in range(STEPS):
        step(model, optimizer)
        eager_optimizer.update(reference, nnx.grad(loss)(reference))
    got = {key: getattr(model, key)[...] for key in ("b", "c", "w")}
    expected = {key: getattr(reference, key)[...] for key in ("b", "c", "w")}
    assert_same_run(name, got, expected)


def _hyperparameter(factory: Callable) -> str:
    names = inspect.signature(factory).parameters
    return next(name for name in ("learning_rate", "lr", "decay") if name in names)


def loss_after_steps(name: str, value, float32_state: bool = False):
    """optax's meta-learning pattern: the loss after a few steps, as a function of an injected
    hyperparameter (the learning rate, or the decay for scale_by_rms). ``float32_state``: the
    same optimizer without its ``state_dtype``."""
    factory, kwargs = CONFIGS[name]
    if float32_state:
        kwargs = {key: v for key, v in kwargs.items() if key != "state_dtype"}
    hyper = _hyperparameter(factory)
    static = [key for key, v in kwargs.items() if callable(v) or isinstance(v, str)]
    tx = optax.inject_hyperparams(factory, static_args=static)(**{**kwargs, hyper: value})
    if factory is rmsprop_jax.scale_by_rms:
        tx = optax.chain(tx, optax.scale_by_learning_rate(0.01))
    params = initial_params()
    state = tx.init(params)
    for t in range(STEPS):
        updates, state = tx.update(gradient(params, t), state, params)
        params = optax.apply_updates(params, updates)
    return sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


def _at(name: str) -> float:
    return 0.9 if _hyperparameter(CONFIGS[name][0]) == "decay" else 0.02


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_differentiated_through_the_update(name):
    """jax.grad through the steps, eagerly and under jit, agrees with a central difference.

    The 16-bit and 8-bit roundings are differentiated straight through (they are unbiased);
    their derivative is compared with the float32 state's. The others are compared with a
    central difference in float64 (in float32 a caution mask that flips inside the difference's
    step, or the cancellation of a small derivative, dominates it)."""
    at = _at(name)
    grad = jax.grad(lambda v: loss_after_steps(name, v))
    eager, jitted = float(grad(at)), float(jax.jit(grad)(at))
    assert np.isfinite(eager) and eager != 0.0
    np.testing.assert_allclose(jitted, eager, rtol=1e-3)
    if name in NARROW:  # against the same optimizer with a float32 state
        expected = float(jax.grad(lambda v: loss_after_steps(name, v, float32_state=True))(at))
        np.testing.assert_allclose(eager, expected, rtol=0.15 if "8bit" in name else 0.02)
        return
    with jax.enable_x64(True):
        exact = float(jax.grad(lambda v: loss_after_steps(name, v))(at))
        h = 1e-6
        central = (loss_after_steps(name, at + h) - loss_after_steps(name, at - h)) / (2 * h)
    np.testing.assert_allclose(exact, float(central), rtol=1e-5)
