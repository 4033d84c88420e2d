"""Issue 12 groundwork: what an RMSProp step with an 8-bit ``nu`` costs on this machine.

    python3 benchmarks/prototype_8bit_step.py     # -> benchmarks/results/prototype_8bit_step-cpu2core.json

A prototype, not the library's step: plain RMSProp (decay 0.99, eps 1e-8) over 16 leaves
of 1024 x 1024 float32 params whose ``nu`` is kept by ``rmsprop_jax._storage_8bit``
(E5M3 codes in 16 x 16 tiles, stochastic rounding), in bitsandbytes' order: decode, update
the average in float32, take each block's new maximum, step the parameter with the
float32 average, encode. Timed against ``optax.rmsprop`` and a second copy of it (the A/A
control), jitted with params and state donated, interleaved in a fresh random order each
round, median of ``--repeats``. Also reported: the fusions and the bytes of the compiled
HLO's parameters and outputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from rmsprop_jax import _storage_8bit as s8
from rmsprop_jax._dtypes import rounding_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite beside this script, however it is run
import suite

RESULTS = Path(__file__).resolve().parent / "results"
LR, DECAY, EPS = 1e-3, 0.99, 1e-8


def eight_bit_rmsprop(
    from_stored: bool = False, materialize: bool = False, bound_scale: bool = False
) -> optax.GradientTransformation:
    """Plain RMSProp whose ``nu`` is 8-bit (tiles), as a prototype transformation.

    ``from_stored``: step the parameter with the average as stored (decoded from the new
    codes, floored at ``(1 - decay) * g^2``, which bounds the step) instead of the float32
    average, so the old codes are dead once the new ones are written.
    """

    def init(params: list[jax.Array]) -> tuple[jax.Array, list[s8.Quantized]]:
        zeros = [s8.encode(jnp.zeros_like(p), "tiles", s8.UNSIGNED, jnp.uint32(0)) for p in params]
        return jnp.zeros([], jnp.int32), zeros

    def update(grads: list[jax.Array], state: tuple, params: Any = None) -> tuple:
        del params
        count, nus = state
        updates, new_nus = [], []
        for index, (g, nu) in enumerate(zip(grads, nus, strict=True)):
            average = DECAY * s8.decode(nu, "tiles", s8.UNSIGNED) + (1 - DECAY) * g * g
            if materialize:
                average = jax.lax.optimization_barrier(average)
            scale = None
            if bound_scale:
                squares = jnp.max(
                    (g * g).reshape(g.shape[0] // s8.TILE, s8.TILE, g.shape[1] // s8.TILE, s8.TILE), (1, 3)
                )
                scale = DECAY * nu.scale + (1 - DECAY) * squares
            new_nus.append(s8.encode(average, "tiles", s8.UNSIGNED, rounding_seed(count, index, 0), scale))
            if from_stored:
                average = jnp.maximum(s8.decode(new_nus[-1], "tiles", s8.UNSIGNED), (1 - DECAY) * g * g)
            updates.append(-LR * g * jax.lax.rsqrt(average + EPS))
        return updates, (count + 1, new_nus)

    return optax.GradientTransformation(init, update)


def _step(tx: optax.GradientTransformation) -> Callable:
    def step(params: list, state: Any, grads: list) -> tuple:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def _arrays(leaves: int, side: int, seed: int) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(seed), leaves)
    return [jax.random.normal(key, (side, side), jnp.float32) for key in keys]


def hlo_summary(tx: optax.GradientTransformation, params: list, grads: list) -> dict[str, int]:
    """Fusions, copies, and bytes of the parameters and outputs, of the compiled step."""
    return suite.hlo_summary(_step(tx).lower(params, tx.init(params), grads).compile())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=16)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", type=Path, default=RESULTS / "prototype_8bit_step-cpu2core.json")
    args = parser.parse_args(argv)
    contenders = {
        "optax": optax.rmsprop(LR, decay=DECAY, eps=EPS),
        "optax (A/A control)": optax.rmsprop(LR, decay=DECAY, eps=EPS),
        "8-bit nu prototype": eight_bit_rmsprop(),
        "8-bit nu, step from the stored codes": eight_bit_rmsprop(from_stored=True),
        "8-bit nu, average materialized once": eight_bit_rmsprop(materialize=True),
        "8-bit nu, running-bound scale": eight_bit_rmsprop(bound_scale=True),
    }
    grads = _arrays(args.leaves, args.side, 1)
    timers: dict[str, Callable[[], float]] = {}
    hlo = {}
    for label, tx in contenders.items():
        hlo[label] = hlo_summary(tx, _arrays(args.leaves, args.side, 2), grads)
        step = _step(tx)
        params = _arrays(args.leaves, args.side, 2)
        timers[label] = suite.donated_timer(step, params, tx.init(params), grads)
    times = suite.interleaved(timers, args.repeats)
    medians = {label: 1e3 * statistics.median(samples) for label, samples in times.items()}
    spreads = {label: 1e3 * (max(samples) - min(samples)) for label, samples in times.items()}
    report = {
        "params": args.leaves * args.side * args.side,
        "leaves": args.leaves,
        "repeats": args.repeats,
        "median_ms": medians,
        "spread_ms": spreads,
        "over_optax": {label: medians[label] / medians["optax"] for label in medians},
        "hlo": hlo,
        "state_bytes_per_param": {
            "optax": 4.0,
            "8-bit nu": 1 + 4 / (s8.TILE * s8.TILE),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
