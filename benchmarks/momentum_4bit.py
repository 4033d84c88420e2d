"""Whether ``mu`` and the momentum buffer hold up in 4 bits: a sign and a 3-bit exponent, against 8 bits.

    python3 benchmarks/momentum_4bit.py    # -> benchmarks/results/momentum-4bit.{json,md} (about 5 min)

``state_dtype="4bit"`` keeps ``nu`` in 4 bits and the signed arrays (``mu``, the momentum buffer)
in the 8-bit storage: a sign bit and E4M3 (``2**-17`` to 1, eighth-binade steps). This measures the
alternative the issue asks about: the signed arrays in 4 bits, a sign bit and E3M0 (0, then
``2**-6`` to 1 in powers of two), stochastically rounded as every code is. It is simulated by
swapping the 8-bit codec's signed format for the run, each configuration in a process of its own
(JAX caches the codec's traces within a process): the codes then take 4 bits of information in a
byte each, with the 8-bit storage's blocks (256 entries or fewer), so only the numerics are
measured, not the bytes. On the MNIST-1D demo with momentum (the demo's default) and centered
RMSProp, and on ``noisy_quadratic.py``'s problem with momentum 0.9, against float32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_accuracy import machine, measured_on
from timing import mean_and_range, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "momentum-4bit"
CONFIGS = ("float32", "4bit (signed in 8 bits)", "4bit (signed in 4 bits)")


def _one(config: str, seeds: Sequence[int], steps: int | None) -> dict[str, dict[str, float]]:
    """One configuration's runs, in this process: the demo's variants and the quadratic."""
    import demo_8bit
    import noisy_quadratic

    from rmsprop_jax import _codec_8bit as codec
    from rmsprop_jax.demo.data import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, load_mnist1d
    from rmsprop_jax.demo.optimizers import rmsprop_choice
    from rmsprop_jax.demo.train import train

    if config == CONFIGS[2]:
        codec.SIGNED = codec.Format(3, 0, signed=True)

    state_dtype = "float32" if config == CONFIGS[0] else "4bit"
    data, runs = load_mnist1d(), {}
    demo_steps = DEFAULT_STEPS if steps is None else steps
    for variant in ("momentum", "centered"):
        options, peak = demo_8bit.VARIANTS[variant]
        for seed in seeds:
            choice = rmsprop_choice(None, peak, demo_steps, state_dtype, options)
            history = train(choice.tx, data, steps=demo_steps, batch_size=DEFAULT_BATCH_SIZE, seed=seed).history
            runs.setdefault(f"demo {variant}", {})[str(seed)] = float(history.test_accuracy[-1])
    options = noisy_quadratic.VARIANTS["decay 0.99, momentum 0.9"]
    for seed in seeds[:2]:
        value = noisy_quadratic.distance(state_dtype, options, seed, 3000 if steps is None else steps)
        runs.setdefault("quadratic, momentum 0.9 (distance)", {})[str(seed)] = value
    return runs


def markdown(results: dict[str, Any]) -> str:
    rows = ["| run | " + " | ".join(CONFIGS) + " |", "|---" * (len(CONFIGS) + 1) + "|"]
    for run in results["runs"][CONFIGS[0]]:
        cells = []
        for config in CONFIGS:
            values = list(results["runs"][config][run].values())
            cells.append(mean_and_range(values))
        rows.append(f"| {run} | " + " | ".join(cells) + " |")
    rows += [
        "",
        f"{measured_on(results)}; seeds {results['seeds']} (the quadratic: the first two): the demo's test accuracy, "
        "the quadratic's distance to the optimum over the starting distance; mean (range).",
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's, and 3000 on the quadratic")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", choices=CONFIGS, help="(internal) one configuration, in this process")
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(_one(args.one, args.seeds, args.steps)))
        return {}
    runs = {}
    for config in CONFIGS:
        child = [sys.executable, __file__, "--one", config, "--seeds", *map(str, args.seeds)]
        child += [] if args.steps is None else ["--steps", str(args.steps)]
        done = subprocess.run(child, check=True, capture_output=True, text=True)
        runs[config] = json.loads(done.stdout.strip().splitlines()[-1])
        print(config, runs[config], file=sys.stderr, flush=True)
    results = {
        "command": " ".join(["python3 benchmarks/momentum_4bit.py", *(sys.argv[1:] if argv is None else argv)]),
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
