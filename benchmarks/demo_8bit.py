"""The MNIST-1D demo with an 8-bit (or 4-bit) state against float32: plain, momentum and centered RMSProp.

    python3 benchmarks/demo_8bit.py            # seeds 0, 1, 2 -> benchmarks/results/demo_mnist1d_8bit.json
    python3 benchmarks/demo_8bit.py --seeds 0 1 2 3 4 --state-dtypes float32 8bit 4bit \
        --out benchmarks/results/demo_mnist1d_4bit.json

Each run is the demo's training (``rmsprop_jax.demo``: its ConvNet, data, schedule, clipping,
steps and batch size) with ``rmsprop_jax.rmsprop(..., state_dtype=...)``; only the optimizer's
options and the state's storage change between rows. The ConvNet's two 3 x 64 x 64 kernels
(24,576 of its 28,298 parameters) are quantized; the other leaves are under 4096 entries and
keep float32, but for the 320 x 10 head's ``nu`` under ``4bit`` (4-bit from 1024 entries). The
docs' Numerics page quotes the table from the results file (a test checks that they agree).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # demo_accuracy beside this script
from demo_accuracy import machine, measured_on

from rmsprop_jax.demo.optimizers import RMSPROP_OPTIONS

RESULTS = Path(__file__).resolve().parent / "results" / "demo_mnist1d_8bit.json"
# Variant -> (rmsprop's options, peak learning rate). Momentum is the demo's default.
VARIANTS: dict[str, tuple[dict[str, Any], float]] = {
    "plain": ({**RMSPROP_OPTIONS, "momentum": None}, 3e-3),
    "momentum": (RMSPROP_OPTIONS, 1e-3),
    "centered": ({**RMSPROP_OPTIONS, "centered": True}, 1e-3),
}
STATE_DTYPES = ("float32", "8bit")


def markdown(results: dict) -> str:
    """The Numerics page's table: test accuracy per seed and the mean, float32 and each narrow state side by side."""
    seeds = [str(seed) for seed in results["seeds"]]
    narrow = [state for state in next(iter(results["runs"].values())) if state != "float32"]
    compared = f"{narrow[0]} - float32" if len(narrow) == 1 else "- float32"
    rows = [
        "| variant | state | " + " | ".join(f"seed {seed}" for seed in seeds) + f" | mean | {compared} |",
        "|---" * (len(seeds) + 4) + "|",
    ]
    for variant, by_state in results["runs"].items():
        means = {state: sum(by_state[state][s]["test_accuracy"] for s in seeds) / len(seeds) for state in by_state}
        for state, runs in by_state.items():
            difference = f"{100 * (means[state] - means['float32']):+.2f} pts" if state != "float32" else ""
            rows.append(
                f"| {variant} | {state} | "
                + " | ".join(f"{runs[s]['test_accuracy']:.3f}" for s in seeds)
                + f" | **{means[state]:.3f}** | {difference} |"
            )
    rows += [
        "",
        f"{measured_on(results)}; {results['steps']} steps of batch {results['batch_size']}, peak learning rates "
        + ", ".join(f"{v} {lr:g}" for v, lr in results["learning_rates"].items())
        + ".",
    ]
    return "\n".join(rows)


def largest_gap(results: dict) -> float:
    """The largest |mean of a narrow state - mean float32| over the variants, in accuracy (not points)."""
    gaps = []
    for by_state in results["runs"].values():
        means = {state: sum(r["test_accuracy"] for r in runs.values()) / len(runs) for state, runs in by_state.items()}
        gaps += [abs(mean - means["float32"]) for state, mean in means.items() if state != "float32"]
    return max(gaps)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--state-dtypes", nargs="+", default=list(STATE_DTYPES), help="float32 first")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from rmsprop_jax.demo.data import DEFAULT_BATCH_SIZE, DEFAULT_STEPS, load_mnist1d
    from rmsprop_jax.demo.optimizers import rmsprop_choice
    from rmsprop_jax.demo.train import train

    steps = DEFAULT_STEPS if args.steps is None else args.steps
    data = load_mnist1d()
    runs: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for variant in args.variants:
        options, peak = VARIANTS[variant]
        for state_dtype in args.state_dtypes:
            for seed in args.seeds:
                choice = rmsprop_choice(None, peak, steps, state_dtype, options)
                history = train(choice.tx, data, steps=steps, batch_size=DEFAULT_BATCH_SIZE, seed=seed).history
                runs.setdefault(variant, {}).setdefault(state_dtype, {})[str(seed)] = {
                    "test_accuracy": history.test_accuracy[-1],
                    "train_seconds": round(history.train_seconds, 2),
                }
                print(f"{variant} {state_dtype} seed {seed}: {history.test_accuracy[-1]:.4f}", file=sys.stderr)
    results = {
        "command": " ".join(["python3 benchmarks/demo_8bit.py", *(sys.argv[1:] if argv is None else argv)]),
        "steps": steps,
        "batch_size": DEFAULT_BATCH_SIZE,
        "seeds": args.seeds,
        "learning_rates": {variant: VARIANTS[variant][1] for variant in args.variants},
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
