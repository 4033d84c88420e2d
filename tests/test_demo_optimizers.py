"""The demo's optimizers: the default RMSProp, each preset, the baselines."""

from __future__ import annotations

import inspect

import pytest

from rmsprop_jax import presets
from rmsprop_jax.demo import optimizers


@pytest.mark.parametrize("name", presets.OPTIMIZERS)
def test_each_preset_trains_with_its_own_default_learning_rate_or_requires_lr(name):
    parameter = next(iter(inspect.signature(getattr(presets, name)).parameters.values()))
    lr_name, default = optimizers.preset_learning_rate(name)
    assert lr_name == parameter.name
    if parameter.default is inspect.Parameter.empty:
        assert default is None
        with pytest.raises(ValueError, match="--lr"):
            optimizers.rmsprop_choice(name, None, steps=10)
        choice = optimizers.rmsprop_choice(name, 3e-4, steps=10)
        assert choice.settings["peak_learning_rate"] == 3e-4
    else:
        choice = optimizers.rmsprop_choice(name, None, steps=10)
        assert choice.settings["peak_learning_rate"] == parameter.default
    assert choice.settings["optimizer"] == f"rmsprop_jax.presets.{name}"


def test_lr_overrides_the_default():
    assert (
        optimizers.rmsprop_choice(None, None, steps=10).settings["peak_learning_rate"]
        == optimizers.DEFAULT_LEARNING_RATE
    )
    assert optimizers.rmsprop_choice(None, 0.05, steps=10).settings["peak_learning_rate"] == 0.05
    assert optimizers.rmsprop_choice("pytorch", 0.05, steps=10).settings["peak_learning_rate"] == 0.05
