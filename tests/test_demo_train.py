"""The demo's training loop."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rmsprop_jax
from rmsprop_jax.demo.data import load_mnist1d, shift_signals
from rmsprop_jax.demo.train import train


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


def test_checkpointed_run_resumes_bit_identically(data, tmp_path):
    def run(directory):
        tx = rmsprop_jax.rmsprop(optax.cosine_decay_schedule(1e-3, 30), momentum=0.9)
        return train(
            tx,
            data,
            steps=30,
            batch_size=32,
            seed=2,
            channels=8,
            log_every=10,
            eval_every=10,
            checkpoint_dir=directory,
            checkpoint_every=10,
        )

    uninterrupted = run(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["10", "20", "30"]
    assert uninterrupted.resumed_from == 0
    # As if the run had stopped after step 10: a directory holding only that checkpoint.
    shutil.copytree(tmp_path / "a" / "10", tmp_path / "b" / "10")
    resumed = run(tmp_path / "b")
    assert resumed.resumed_from == 10 and resumed.history.log_steps == [20, 30]
    jax.tree.map(np.testing.assert_array_equal, nnx.state(resumed.model), nnx.state(uninterrupted.model))
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, uninterrupted.opt_state)
    finished = run(tmp_path / "a")  # the last checkpoint is the end: nothing left to train
    assert finished.resumed_from == 30 and finished.history.eval_steps == [30]
    assert finished.history.test_accuracy == uninterrupted.history.test_accuracy[-1:]


def test_a_checkpoint_directory_in_the_old_layout_is_refused(data, tmp_path):
    (tmp_path / "step_10").mkdir()
    with pytest.raises(ValueError, match=r"old step_<n> layout \(step_10\)"):
        train(rmsprop_jax.rmsprop(1e-3), data, steps=2, batch_size=8, checkpoint_dir=tmp_path)
