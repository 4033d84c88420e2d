"""Bad input: a ValueError naming the argument at construction; traced values pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import _validation as validation


def case_id(case) -> str:
    """A test id that is the same in every xdist worker (no object addresses)."""
    if not isinstance(case, dict):
        return str(case)
    kwargs = case
    return ",".join(f"{k}={'schedule' if callable(v) and not isinstance(v, type) else v}" for k, v in kwargs.items())


BAD_RMSPROP_ARGUMENTS = [
    ({"decay": -0.1}, "decay"),
    ({"decay": 1.5}, "decay"),
    ({"decay": float("nan")}, "decay"),
    ({"eps": -1e-8}, "eps"),
    ({"eps": float("nan")}, "eps"),
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.5}, "momentum"),
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"learning_rate": jnp.asarray(-1.0)}, "learning_rate"),
    ({"learning_rate": "0.1"}, "learning_rate"),
    ({"nesterov": True}, "nesterov"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"initial_scale": -1.0}, "initial_scale"),
    ({"state_dtype": "float8"}, "state_dtype"),
    ({"state_dtype": "int32"}, "state_dtype"),
    ({"state_dtype": jnp.complex64}, "state_dtype"),
    ({"state_dtype": "float64"}, "state_dtype"),  # x64 is off in this process
    ({"centered": "yes"}, "centered"),
    ({"maximize": 1}, "maximize"),
    ({"decay": True}, "decay"),
    ({"bias_correction": True, "decay": 1.0}, "decay"),
    ({"decay": 1.0}, "decay"),  # nu would stay at initial_scale: every update lr * g / sqrt(eps)
    ({"learning_rate": float("inf")}, "learning_rate"),
    ({"weight_decay": float("inf")}, "weight_decay"),
    ({"eps": float("inf")}, "eps"),
    ({"initial_scale": float("inf")}, "initial_scale"),
    ({"learning_rate": jnp.full(3, 0.1)}, "learning_rate"),  # would become per-entry rates
    ({"learning_rate": np.full((2, 1), 0.1)}, "learning_rate"),  # would broadcast a (3,) param to (2, 3)
    ({"decay": jnp.full(3, 0.9)}, "decay"),
    ({"momentum": np.full(3, 0.9)}, "momentum"),
    ({"weight_decay": jnp.full(3, 0.1)}, "weight_decay"),
    ({"state_dtype": "8-bit"}, "state_dtype"),
    ({"centered": True, "eps": 0.0}, "eps"),
    ({"caution": True}, "caution"),
    ({"caution": "yes", "momentum": 0.9}, "caution"),
    ({"weight_decay_mask": {"w": "yes"}}, "weight_decay_mask"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_RMSPROP_ARGUMENTS, ids=case_id)
def test_rmsprop_rejects_bad_arguments_naming_them(kwargs, name):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=rf"Invalid {name} value"):
        rmsprop_jax.rmsprop(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"decay": 2.0}, "decay"),
        ({"eps": -1.0}, "eps"),
        ({"initial_scale": -2}, "initial_scale"),
        ({"state_dtype": "bf16"}, "state_dtype"),
    ],
    ids=case_id,
)
def test_scale_by_rms_rejects_bad_arguments_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"Invalid {name} value"):
        rmsprop_jax.scale_by_rms(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"decay": 0.0},
        {"decay": 0.99999},
        {"eps": 0.0},
        {"momentum": 0.0},
        {"momentum": 0.999},
        {"learning_rate": 0.0},
        {"learning_rate": optax.constant_schedule(-1.0)},  # schedules are not evaluated
        {"state_dtype": "bfloat16"},
        {"state_dtype": jnp.float16},
        {"state_dtype": np.float32},
        {"weight_decay": 0},
        {"learning_rate": np.float32(0.1)},
        {"decay": jnp.asarray(0.5)},
    ],
    ids=case_id,
)
def test_boundary_values_are_accepted(kwargs):
    rmsprop_jax.rmsprop(**{"learning_rate": 0.1, **kwargs})


def test_float64_state_is_accepted_under_x64():
    with jax.enable_x64(True):
        tx = rmsprop_jax.rmsprop(0.1, state_dtype="float64")
        assert tx.init(jnp.ones(2, jnp.float32)).nu.dtype == jnp.float64


def test_traced_values_skip_the_eager_checks():
    # A traced out-of-range decay cannot be inspected; construction must not fail.
    @jax.jit
    def step(decay, lr, params):
        tx = rmsprop_jax.rmsprop(lr, decay=decay, momentum=decay * 0, weight_decay=lr * 0)
        updates, _ = tx.update(params, tx.init(params), params)
        return updates

    assert np.all(np.isfinite(step(jnp.asarray(0.9), jnp.asarray(0.1), jnp.ones(3))))


def test_helpers_name_the_argument_they_are_given():
    with pytest.raises(ValueError, match=r"Invalid alpha value: -1\.0"):
        validation.check_interval("alpha", -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"Invalid rho value: an array of shape \(2,\).*rho must be a scalar"):
        validation.check_interval("rho", np.array([0.5, 2.0]), 0.0, 1.0)
    jax.jit(lambda x: validation.check_interval("rho", x, 0.0, 1.0) or x)(5.0)  # traced: not checked


def test_the_8bit_misspelling_lists_the_right_name():
    with pytest.raises(
        ValueError, match=r"Invalid state_dtype value: '8-bit' \(state_dtype must be one of .*'8bit', '4bit'\)"
    ):
        rmsprop_jax.rmsprop(0.1, state_dtype="8-bit")


def test_a_traced_array_hyperparameter_is_refused_at_construction_too():
    """Its value is unknown under a trace, its shape is not."""

    def build(lr):
        rmsprop_jax.rmsprop(lr)
        return lr

    jax.jit(build)(jnp.asarray(0.1))  # a traced scalar passes
    with pytest.raises(ValueError, match=r"Invalid learning_rate value: an array of shape \(3,\)"):
        jax.jit(build)(jnp.full(3, 0.1))


def test_a_schedule_returning_an_array_is_refused_where_it_is_traced():
    tx = rmsprop_jax.rmsprop(lambda count: jnp.full(3, 0.1))
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"learning_rate value: the schedule returned an array of shape \(3,\)"):
        jax.jit(tx.update)(params, tx.init(params), params)
    decay = rmsprop_jax.rmsprop(0.1, weight_decay=lambda count: jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"weight_decay value: the schedule returned an array of shape \(1, 3\)"):
        decay.update(params, decay.init(params), params)
