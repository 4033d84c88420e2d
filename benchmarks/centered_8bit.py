"""Issue 12 groundwork: centered RMSProp with 8-bit averages, the naive form against the variance form.

    python3 benchmarks/centered_8bit.py     # -> benchmarks/results/centered_8bit.json

Centered RMSProp divides by ``sqrt(E[g^2] - E[g]^2 + eps)``. With both averages in 8 bits
(E5M3 for ``nu``, sign + E4M3 for ``mu``, ``rmsprop_jax._storage_8bit``), each carries a
few percent of rounding noise; when the gradient's mean dominates its spread the
difference is far smaller than that noise. The variance form stores the variance itself,
``v' = d * v + d * (1 - d) * (g - mu)^2`` (exact in real arithmetic, never a difference of
two large numbers). This script runs both forms and the float32 naive form on gradients
``g = mean + spread * noise`` (one block of 4096 entries, decay 0.95, eps 1e-8) and reports
the variance estimate and the step ``|g| / sqrt(variance + eps)`` against float32's.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rmsprop_jax import _storage_8bit as s8

RESULTS = Path(__file__).resolve().parent / "results"
DECAY, EPS, SHAPE = 0.95, 1e-8, (16, 256)


def run(mean: float, spread: float, steps: int, seed: int = 0) -> dict[str, float]:
    """Median over entries, after ``steps`` steps, of each form's variance and step over float32's."""

    def quantized(x: jax.Array, fmt: s8.Format, key: int) -> jax.Array:
        return s8.decode(s8.encode(x, "runs", fmt, jnp.uint32(key)), "runs", fmt)

    def step(carry: tuple, inputs: tuple) -> tuple:
        (nu, mu), (n8, m8), (v8, mv8) = carry
        key, t = inputs
        g = mean + spread * jax.random.normal(key, SHAPE)
        seed_base = t.astype(jnp.uint32) * 8
        nu, mu = DECAY * nu + (1 - DECAY) * g * g, DECAY * mu + (1 - DECAY) * g
        n8 = quantized(DECAY * n8 + (1 - DECAY) * g * g, s8.UNSIGNED, seed_base)
        m8 = quantized(DECAY * m8 + (1 - DECAY) * g, s8.SIGNED, seed_base + 1)
        v8 = quantized(DECAY * v8 + DECAY * (1 - DECAY) * (g - mv8) ** 2, s8.UNSIGNED, seed_base + 2)
        mv8 = quantized(DECAY * mv8 + (1 - DECAY) * g, s8.SIGNED, seed_base + 3)
        return ((nu, mu), (n8, m8), (v8, mv8)), g

    zeros = jnp.zeros(SHAPE, jnp.float32)
    start = ((zeros, zeros), (zeros, zeros), (zeros, zeros))
    inputs = (jax.random.split(jax.random.key(seed), steps), jnp.arange(steps))
    ((nu, mu), (n8, m8), (v8, _)), gs = jax.lax.scan(step, start, inputs)
    g = gs[-1]
    exact = jnp.maximum(nu - mu * mu, 0)
    naive = jnp.maximum(n8 - m8 * m8, 0)

    def step_size(variance: jax.Array) -> jax.Array:
        return jnp.abs(g) / jnp.sqrt(variance + EPS)

    ratio = {
        "naive_variance": float(jnp.median(naive / exact)),
        "variance_form_variance": float(jnp.median(v8 / exact)),
        "naive_step": float(jnp.median(step_size(naive) / step_size(exact))),
        "variance_form_step": float(jnp.median(step_size(v8) / step_size(exact))),
        "naive_step_max": float(jnp.max(step_size(naive) / step_size(exact))),
        "variance_form_step_max": float(jnp.max(step_size(v8) / step_size(exact))),
        "naive_zero_variance_share": float(jnp.mean(naive == 0)),
    }
    return {"mean": mean, "spread": spread, **{k: float(np.round(v, 4)) for k, v in ratio.items()}}


def main(argv: Sequence[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS / "centered_8bit.json")
    args = parser.parse_args(argv)
    rows = [run(mean, spread, args.steps) for mean, spread in ((0.0, 1.0), (1.0, 1.0), (1.0, 0.1), (1.0, 0.01))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    main()
