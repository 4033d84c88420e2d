"""Which 4-bit code map for ``nu``: powers of two, E3M1, or the linear map (i + 1) / 16.

    python3 benchmarks/code_maps_4bit.py    # -> benchmarks/results/code-maps-4bit.{json,md} (about 5 min)

Each map runs ``benchmarks/noisy_quadratic.py``'s problem (curvatures over four decades, so one block's
square averages span eight) with ``state_dtype="4bit"``, the map swapped into the codec for the run:

- ``E4M0`` (the codec's): codes ``2**(c - 15)`` for c in 1..15 of the half block's scale, down to
  ``2**-14``; stochastic rounding between powers of two;
- ``E3M1``: a mantissa bit, ``{1, 1.5} * 2**k`` down to ``2**-7`` (finer steps, half the range);
- ``linear``: ``(c + 1) / 16`` for c in 0..15, the map of "Memory Efficient Optimizers with 4-bit
  States" (Li et al. 2023) for the second moment, rounded stochastically here too.

Every map stores a value under its smallest code as that code (never 0). The table gives the
distance to the optimum after the steps over the starting distance, mean and range over the seeds,
beside float32's. The swap replaces the codec's module-level format and code functions, each map in
a process of its own (JAX caches the traces of the codec's functions within a process, so a second
map in the same process would run the first one's codes): a measurement, not an option of the
library.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import noisy_quadratic
from demo_accuracy import machine, measured_on
from timing import mean_and_range, write_results

from rmsprop_jax import _codec_4bit as codec
from rmsprop_jax import _codec_8bit as blocks

RESULTS = Path(__file__).resolve().parent / "results" / "code-maps-4bit"
MAPS = ("E4M0", "E3M1", "linear")


def _linear_code(y: jax.Array, noise: jax.Array, fmt: blocks.Format) -> jax.Array:
    """(c + 1) / 16, stochastically rounded: ``floor(16 y - 1 + u)`` with ``u`` uniform from the 23 noise bits."""
    u = noise.astype(jnp.float32) * (1.0 / 2**23)
    return jnp.clip(jnp.floor(y * 16 - 1 + u), 0, 15).astype(jnp.int32)


def _linear_value(code: jax.Array, fmt: blocks.Format) -> jax.Array:
    return (code.astype(jnp.float32) + 1) / 16


@contextmanager
def code_map(name: str) -> Iterator[None]:
    """The codec with ``name``'s map, for the duration of the block."""
    saved = codec.FORMAT, codec.SMALLEST, codec.blocks
    try:
        if name == "E3M1":
            codec.FORMAT, codec.SMALLEST = blocks.Format(3, 1, signed=False), 2.0**-7
        elif name == "linear":
            shim = types.SimpleNamespace(**{k: getattr(blocks, k) for k in dir(blocks) if not k.startswith("__")})
            shim.magnitude_code, shim.magnitude = _linear_code, _linear_value
            codec.blocks, codec.SMALLEST = shim, 1 / 16
        yield
    finally:
        codec.FORMAT, codec.SMALLEST, codec.blocks = saved


def markdown(results: dict[str, Any]) -> str:
    columns = ["float32", *MAPS]
    rows = ["| variant | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant, by_map in results["runs"].items():
        cells = []
        for name in columns:
            values = list(by_map[name].values())
            cells.append(mean_and_range(values))
        rows.append(f"| {variant} | " + " | ".join(cells) + " |")
    rows += [
        "",
        f"{measured_on(results)}; {results['steps']} steps, seeds {results['seeds']}: distance to the optimum over "
        'the starting distance, mean (range), `state_dtype="4bit"` with each map against a float32 state.',
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one-map", choices=["float32", *MAPS], help="(internal) one map, in this process")
    args = parser.parse_args(argv)
    if args.one_map is not None:  # (internal) one map's runs, printed as JSON
        runs = {}
        with code_map("E4M0" if args.one_map == "float32" else args.one_map):
            for variant, options in noisy_quadratic.VARIANTS.items():
                for seed in args.seeds:
                    state_dtype = "float32" if args.one_map == "float32" else "4bit"
                    value = noisy_quadratic.distance(state_dtype, options, seed, args.steps)
                    runs.setdefault(variant, {})[str(seed)] = value
                    print(f"{variant} {args.one_map} seed {seed}: {value:.4f}", file=sys.stderr)
        print(json.dumps(runs))
        return runs
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("float32", *MAPS):
        child = [sys.executable, __file__, "--one-map", name, "--steps", str(args.steps), "--seeds"]
        done = subprocess.run([*child, *map(str, args.seeds)], check=True, capture_output=True, text=True)
        for variant, by_seed in json.loads(done.stdout.strip().splitlines()[-1]).items():
            runs.setdefault(variant, {})[name] = by_seed
    results = {
        "command": " ".join(["python3 benchmarks/code_maps_4bit.py", *(sys.argv[1:] if argv is None else argv)]),
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
