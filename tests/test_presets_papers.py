"""Paper presets against the update rules as the papers write them (float64)."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import hard_gradients

from rmsprop_jax import presets


def hinton_lecture_6e(grads, w, lr, decay=0.9):
    """MeanSquare(w, t) = 0.9 MeanSquare(w, t-1) + 0.1 (dE/dw)^2; divide the gradient
    by sqrt(MeanSquare). No eps: a weight with no gradient gets no update."""
    mean_square = np.zeros_like(w)
    out = []
    for g in grads:
        mean_square = decay * mean_square + (1 - decay) * g**2
        with np.errstate(invalid="ignore", divide="ignore"):
            w = w - np.where(g == 0, 0.0, lr * g / np.sqrt(mean_square))
        out.append(w)
    return out


def graves_eqs_38_to_41(grads, w, lr=1e-4, aleph=0.95, beth=0.9, k=1e-4):
    """n = a n + (1-a) e^2 (38); g = a g + (1-a) e (39);
    D = b D - lr e / sqrt(n - g^2 + k) (40); w = w + D (41)."""
    n, g_avg, delta = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    out = []
    for e in grads:
        n = aleph * n + (1 - aleph) * e**2
        g_avg = aleph * g_avg + (1 - aleph) * e
        delta = beth * delta - lr * e / np.sqrt(n - g_avg**2 + k)
        w = w + delta
        out.append(w)
    return out


def neural_q_learner_lua(grads, w, lr=2.5e-4):
    """DeepMind's NeuralQLearner.lua, qLearnMinibatch: dw is the descent direction
    (-grad); g = 0.95 g + 0.05 dw; g2 = 0.95 g2 + 0.05 dw^2;
    tmp = sqrt(g2 - g^2 + 0.01); deltas = lr * dw / tmp; w += deltas."""
    g, g2 = np.zeros_like(w), np.zeros_like(w)
    out = []
    for grad in grads:
        dw = -grad
        g = g * 0.95 + 0.05 * dw
        g2 = g2 * 0.95 + 0.05 * dw**2
        tmp = np.sqrt(g2 - g * g + 0.01)
        w = w + lr * dw / tmp
        out.append(w)
    return out


def _ours(tx, grads, w):
    params = jnp.asarray(w)
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state, params)
        params = params + updates
        out.append(np.asarray(params))
    return out


@pytest.mark.parametrize(
    ("preset", "reference", "kwargs"),
    [
        (presets.hinton2012, hinton_lecture_6e, {"lr": 0.01}),
        (presets.graves2013, graves_eqs_38_to_41, {}),
        (presets.dqn2015, neural_q_learner_lua, {}),
    ],
    ids=["hinton2012", "graves2013", "dqn2015"],
)
def test_paper_preset_follows_the_paper(preset, reference, kwargs):
    grads = [g.astype(np.float64) for g in hard_gradients(60, (7,), seed=4)]
    w = np.linspace(-1.0, 1.0, 7)
    with jax.enable_x64(True):
        tx = preset(kwargs["lr"]) if "lr" in kwargs else preset()
        ours = _ours(tx, grads, w)
    expected = reference(grads, w, **kwargs)
    np.testing.assert_allclose(np.stack(ours), np.stack(expected), rtol=1e-10, atol=1e-14)
    assert np.abs(expected[-1] - w).max() > 1e-4  # the weights moved


def test_paper_defaults_are_the_papers_constants():
    graves = inspect.signature(presets.graves2013).parameters
    assert [graves[k].default for k in ("learning_rate", "decay", "momentum", "eps")] == [1e-4, 0.95, 0.9, 1e-4]
    dqn = inspect.signature(presets.dqn2015).parameters
    assert [dqn[k].default for k in ("learning_rate", "decay", "eps")] == [2.5e-4, 0.95, 0.01]
    assert inspect.signature(presets.hinton2012).parameters["decay"].default == 0.9


def test_hinton_zero_gradients_give_zero_updates_without_eps():
    tx = presets.hinton2012(0.1)
    params = jnp.ones(3)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jnp.zeros(3), state, params)
        np.testing.assert_array_equal(updates, 0.0)
    updates, state = tx.update(jnp.array([0.0, 1.0, -2.0]), state, params)
    np.testing.assert_allclose(updates, [0.0, -0.1 / np.sqrt(0.1), 0.1 / np.sqrt(0.1)], rtol=1e-6)
