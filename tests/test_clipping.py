"""Keras's per-variable clipnorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import require_keras_on_jax

from rmsprop_jax.clipping import clip_by_leaf_norm


def test_each_leaf_is_clipped_on_its_own():
    tx = clip_by_leaf_norm(2.0)
    grads = {"big": jnp.array([6.0, 8.0]), "small": jnp.array([0.3, 0.4]), "zero": jnp.zeros(3), "none": None}
    updates, _ = jax.jit(tx.update)(grads, tx.init(grads))
    np.testing.assert_allclose(updates["big"], [1.2, 1.6], rtol=1e-6)  # norm 10 -> 2
    np.testing.assert_allclose(updates["small"], [0.3, 0.4], rtol=1e-6)  # under the bound: unchanged
    np.testing.assert_array_equal(updates["zero"], 0.0)
    assert updates["none"] is None


def test_matches_keras_clip_by_norm():
    keras = require_keras_on_jax()
    rng = np.random.default_rng(0)
    optimizer = keras.optimizers.RMSprop(clipnorm=0.7)
    for scale in (1e-3, 1.0, 1e3):
        g = (scale * rng.standard_normal((5, 4))).astype(np.float32)
        theirs = np.asarray(optimizer._clip_gradients([jnp.asarray(g)])[0])
        ours, _ = clip_by_leaf_norm(0.7).update(jnp.asarray(g), None)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "1"])
def test_rejects_a_non_positive_bound(bad):
    with pytest.raises(ValueError, match="Invalid max_norm value"):
        clip_by_leaf_norm(bad)
