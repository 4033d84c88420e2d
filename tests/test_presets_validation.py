"""Presets reject bad arguments in the framework's own names."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import presets
from rmsprop_jax._codec_8bit import Quantized

CASES = [
    (presets.pytorch, {"lr": -0.1}, "lr"),
    (presets.pytorch, {"alpha": 1.5}, "alpha"),
    (presets.pytorch, {"eps": -1.0}, "eps"),
    (presets.pytorch, {"momentum": 1.0}, "momentum"),
    (presets.pytorch, {"weight_decay": -0.1}, "weight_decay"),
    (presets.pytorch, {"centered": True, "eps": 0.0}, "eps"),
    (presets.pytorch, {"maximize": "no"}, "maximize"),
    (presets.keras, {"learning_rate": float("nan")}, "learning_rate"),
    (presets.keras, {"rho": -0.5}, "rho"),
    (presets.keras, {"epsilon": -1e-7}, "epsilon"),
    (presets.keras, {"momentum": 2.0}, "momentum"),
    (presets.keras, {"weight_decay": -1.0}, "weight_decay"),
    (presets.keras, {"clipnorm": -1.0}, "clipnorm"),
    (presets.keras, {"clipvalue": 0.0}, "clipvalue"),
    (presets.keras, {"global_clipnorm": float("nan")}, "global_clipnorm"),
    (presets.keras, {"centered": True, "epsilon": 0.0}, "epsilon"),
    (presets.tensorflow_v1, {"learning_rate": -1.0}, "learning_rate"),
    (presets.tensorflow_v1, {"learning_rate": 0.1, "decay": 1.1}, "decay"),
    (presets.tensorflow_v1, {"learning_rate": 0.1, "epsilon": -1.0}, "epsilon"),
    (presets.tensorflow_v1, {"learning_rate": 0.1, "momentum": -0.1}, "momentum"),
    (presets.timm, {"alpha": -0.1}, "alpha"),
    (presets.timm, {"lr": -1.0}, "lr"),
    (presets.timm, {"caution": 1}, "caution"),
    (presets.timm, {"decoupled_decay": "yes"}, "decoupled_decay"),
    (presets.timm, {"foreach": "yes"}, "foreach"),
    (presets.timm, {"corrected_weight_decay": True, "lr": 0.0}, "lr"),
    (
        presets.timm,
        {
            "lr": optax.constant_schedule(0.1),
            "weight_decay": 0.1,
            "decoupled_decay": True,
            "corrected_weight_decay": True,
        },
        "max_lr",
    ),
    (presets.optax, {"learning_rate": 0.1, "decay": 2.0}, "decay"),
    (presets.optax, {"learning_rate": 0.1, "nesterov": True}, "nesterov"),
    (presets.hinton2012, {"learning_rate": 0.1, "decay": -1.0}, "decay"),
    (presets.graves2013, {"eps": 0.0}, "eps"),
    (presets.graves2013, {"momentum": 1.0}, "momentum"),
    (presets.dqn2015, {"learning_rate": -2.5e-4}, "learning_rate"),
]


@pytest.mark.parametrize(
    ("preset", "kwargs", "name"), CASES, ids=[f"{p.__name__}-{n}-{i}" for i, (p, _, n) in enumerate(CASES)]
)
def test_bad_arguments_are_named_as_the_framework_names_them(preset, kwargs, name):
    with pytest.raises(ValueError, match=rf"Invalid {name} value"):
        preset(**kwargs)


def test_every_preset_accepts_an_optax_schedule():
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    for tx in (
        presets.pytorch(schedule),
        presets.keras(schedule),
        presets.tensorflow_v1(schedule),
        presets.timm(schedule),
        presets.optax(schedule),
        presets.hinton2012(schedule),
        presets.graves2013(schedule),
        presets.dqn2015(schedule),
    ):
        assert tx.init({"w": optax.tree.zeros_like({"w": 0.0})["w"]}) is not None


@pytest.mark.parametrize("name", presets.OPTIMIZERS)
def test_every_preset_takes_a_keyword_only_8bit_state_dtype(name):
    constructor = getattr(presets, name)
    parameter = inspect.signature(constructor).parameters["state_dtype"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
    needs_lr = next(iter(inspect.signature(constructor).parameters.values())).default is inspect.Parameter.empty
    tx = constructor(*([1e-3] if needs_lr else []), state_dtype="8bit")
    params = {"w": jnp.ones((64, 64)), "b": jnp.ones(8)}
    states = [
        s
        for s in jax.tree.leaves(tx.init(params), is_leaf=lambda x: isinstance(x, rmsprop_jax.RmsPropState))
        if isinstance(s, rmsprop_jax.RmsPropState)
    ]
    assert len(states) == 1 and isinstance(states[0].nu["w"], Quantized)
    updates, _ = tx.update(params, tx.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
    with pytest.raises(ValueError, match="Invalid state_dtype value: 'int4'"):
        constructor(*([1e-3] if needs_lr else []), state_dtype="int4")
