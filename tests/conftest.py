"""Shared fixtures: a gradient sequence that is hard on an optimizer."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

import numpy as np
import pytest


def hard_gradients(steps: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """Gradients whose magnitude jumps between 1e-3 and 1e3 and that are exactly
    zero on some entries, with both signs and a drifting mean."""
    rng = np.random.default_rng(seed)
    zero = rng.random(shape) < 0.2
    grads = []
    for t in range(steps):
        scale = 10.0 ** rng.choice([-3, -1, 0, 1, 3])
        g = scale * (rng.standard_normal(shape) + 0.5 * np.sin(t / 7))
        grads.append(np.where(zero, 0.0, g).astype(np.float32))
    return grads


@pytest.fixture
def gradients() -> list[np.ndarray]:
    return hard_gradients(60, (4, 3))
