"""A float64 numpy RMSProp, written from the documented formula, for the tests.

Independent of the package: plain loops over one array, no JAX.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def reference_trajectory(
    grads: list[np.ndarray],
    params: np.ndarray,
    *,
    learning_rate: float | Callable[[int], float] | None,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: float | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    weight_decay: float | Callable[[int], float] = 0.0,
    decoupled_weight_decay: bool = False,
    lr_in_momentum: bool = True,
    maximize: bool = False,
    caution: bool = False,
) -> list[np.ndarray]:
    """Applies the documented step to ``params`` for each gradient; returns the updates.

    ``learning_rate=None`` is ``scale_by_rms``: the scaled gradient, no sign flip.
    """
    p = np.array(params, dtype=np.float64)
    nu = np.full_like(p, initial_scale)
    mu = np.zeros_like(p)
    buf = np.zeros_like(p)
    updates = []
    for t, raw in enumerate(grads):
        lr = learning_rate(t) if callable(learning_rate) else learning_rate
        wd = weight_decay(t) if callable(weight_decay) else weight_decay
        g = np.array(raw, dtype=np.float64)
        if maximize:
            g = -g
        if wd and not decoupled_weight_decay:
            g = g + wd * p
        nu = decay * nu + (1 - decay) * np.abs(g) ** 2
        mu = decay * mu + (1 - decay) * g
        correction = 1 - decay ** (t + 1) if bias_correction else 1.0
        variance = nu / correction
        if centered:
            variance = np.maximum(variance - (mu / correction) ** 2, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            denominator = np.sqrt(variance + eps) if eps_in_sqrt else np.sqrt(variance) + eps
            scaled = np.where(g == 0, 0.0, g / denominator)
        if lr is None:
            update = scaled
        elif momentum is None:
            update = -lr * scaled
        else:
            step = lr * scaled if lr_in_momentum else scaled
            buf = momentum * buf + step
            velocity = step + momentum * buf if nesterov else buf
            if caution:  # Cautious Optimizers: keep entries agreeing with g, rescale by the kept fraction
                keep = (velocity * g > 0).astype(np.float64)
                velocity = velocity * keep / max(keep.mean(), 1e-3)
            update = -velocity if lr_in_momentum else -lr * velocity
        if lr is not None and wd and decoupled_weight_decay:
            update = update - lr * wd * p
        p = p + update
        updates.append(update)
    return updates
