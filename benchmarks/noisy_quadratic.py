"""A noisy quadratic with a known optimum: how far each state dtype ends from it.

    python3 benchmarks/noisy_quadratic.py    # -> benchmarks/results/noisy-quadratic.{json,md}

The loss is ``0.5 * sum(h * (w - w_star)**2)`` over a 256 x 256 weight (every storage's blocks fit
it), with curvatures ``h`` log-uniform over four decades (so the square averages of one block span
eight), and each step's gradient ``h * (w - w_star) + sigma * sqrt(h) * noise``: the stochastic
gradient of a least-squares problem whose noise grows with the curvature. RMSProp (plain, decay
0.99 and 0.999, and with momentum 0.9) runs the same steps, learning-rate schedule, gradient noise
and start for each ``state_dtype``; the table gives the distance to the optimum after the steps
relative to the start, ``|w - w_star| / |w0 - w_star|``, mean and range over the seeds. After 3000
steps float32 ends at the noise floor the schedule leaves (about 0.012), so a storage that matches
it trains as float32 does here; ``benchmarks/code_maps_4bit.py`` shows maps that do not. The run is
a ``jax.lax.scan`` under ``jax.jit``; ``--steps`` and ``--seeds`` shorten it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_accuracy import machine, measured_on
from timing import mean_and_range, write_results

import rmsprop_jax

RESULTS = Path(__file__).resolve().parent / "results" / "noisy-quadratic"
SHAPE = (256, 256)
SIGMA = 0.1
VARIANTS: dict[str, dict[str, Any]] = {
    "decay 0.99": {"decay": 0.99},
    "decay 0.999": {"decay": 0.999},
    "decay 0.99, momentum 0.9": {"decay": 0.99, "momentum": 0.9},
}
STATE_DTYPES = ("float32", "8bit", "4bit")


def distance(state_dtype: str, options: dict[str, Any], seed: int, steps: int) -> float:
    """``|w - w_star| / |w0 - w_star|`` after ``steps`` steps."""
    key = jax.random.key(seed)
    k_h, k_star, k_noise = jax.random.split(key, 3)
    h = 10.0 ** jax.random.uniform(k_h, SHAPE, minval=-2.0, maxval=2.0)
    w_star = jax.random.normal(k_star, SHAPE)
    w0 = jnp.zeros(SHAPE)
    lr = optax.cosine_decay_schedule(3e-2 if options.get("momentum") is None else 3e-3, steps)
    tx = rmsprop_jax.rmsprop(lr, state_dtype=None if state_dtype == "float32" else state_dtype, **options)

    def step(carry: tuple[jax.Array, Any], t: jax.Array) -> tuple[tuple[jax.Array, Any], None]:
        w, state = carry
        noise = jax.random.normal(jax.random.fold_in(k_noise, t), SHAPE)
        g = h * (w - w_star) + SIGMA * jnp.sqrt(h) * noise
        updates, state = tx.update(g, state, w)
        return (optax.apply_updates(w, updates), state), None

    run = jax.jit(lambda w: jax.lax.scan(step, (w, tx.init(w)), jnp.arange(steps))[0][0])
    w = run(w0)
    return float(jnp.linalg.norm(w - w_star) / jnp.linalg.norm(w0 - w_star))


def markdown(results: dict) -> str:
    rows = ["| variant | " + " | ".join(STATE_DTYPES) + " |", "|---" * (len(STATE_DTYPES) + 1) + "|"]
    for variant, by_state in results["runs"].items():
        cells = []
        for state in STATE_DTYPES:
            values = list(by_state[state].values())
            cells.append(mean_and_range(values))
        rows.append(f"| {variant} | " + " | ".join(cells) + " |")
    rows += [
        "",
        f"{measured_on(results)}; {results['steps']} steps, seeds {results['seeds']}: distance to the optimum "
        "over the starting distance, mean (range).",
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for variant, options in VARIANTS.items():
        for state_dtype in STATE_DTYPES:
            for seed in args.seeds:
                value = distance(state_dtype, options, seed, args.steps)
                runs.setdefault(variant, {}).setdefault(state_dtype, {})[str(seed)] = value
                print(f"{variant} {state_dtype} seed {seed}: {value:.4f}", file=sys.stderr)
    results = {
        "command": " ".join(["python3 benchmarks/noisy_quadratic.py", *(sys.argv[1:] if argv is None else argv)]),
        "steps": args.steps,
        "seeds": args.seeds,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    write_results(args.out, results, lambda r: markdown(r) + "\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
