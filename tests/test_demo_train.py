"""The demo's training loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rmsprop_jax
from rmsprop_jax.demo.data import load_mnist1d
from rmsprop_jax.demo.train import shift_signals, train


@pytest.fixture(scope="module")
def data():
    return load_mnist1d()


def test_shift_signals_moves_each_row_and_fills_with_zeros():
    x = jnp.arange(1, 2 * 6 + 1, dtype=jnp.float32).reshape(2, 6, 1)
    shifted = np.asarray(shift_signals(x, jax.random.key(0), max_shift=2))[..., 0]
    for row, original in zip(shifted, np.asarray(x)[..., 0], strict=True):
        matches = [s for s in range(-2, 3) if np.array_equal(row, np.roll(np.pad(original, 2), s)[2:-2])]
        assert len(matches) == 1


def test_shift_signals_with_zero_shift_is_the_identity():
    x = jnp.ones((3, 40, 1))
    assert shift_signals(x, jax.random.key(0), max_shift=0) is x


def test_train_logs_evaluates_and_learns(data):
    logged = []
    tx = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(1e-3, momentum=0.9))
    result = train(
        tx,
        data,
        steps=150,
        batch_size=50,
        seed=0,
        channels=16,
        log_every=50,
        eval_every=60,
        on_log=lambda *args: logged.append(args),
    )
    history = result.history
    assert history.log_steps == [50, 100, 150] and [entry[0] for entry in logged] == history.log_steps
    assert history.eval_steps == [60, 120, 150]
    assert history.train_loss[-1] < 0.7 * history.train_loss[0]
    assert history.test_accuracy[-1] > 0.3  # chance is 0.1
    assert all(0.0 <= a <= 1.0 for a in history.train_accuracy + history.test_accuracy)
    assert history.train_seconds > 0
    nu = optax.tree_utils.tree_get(result.opt_state, "nu")
    assert jax.tree.structure(nu) == jax.tree.structure(nnx.state(result.model))


def test_train_is_deterministic_for_a_seed(data):
    runs = [
        train(rmsprop_jax.rmsprop(1e-3), data, steps=20, batch_size=32, seed=seed, channels=8, log_every=10)
        for seed in (5, 5, 6)
    ]
    assert runs[0].history.train_loss == runs[1].history.train_loss
    assert runs[0].history.train_loss != runs[2].history.train_loss
