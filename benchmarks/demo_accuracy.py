"""Runs the MNIST-1D demo with its defaults and ``--compare`` for several seeds; records the results.

    python3 benchmarks/demo_accuracy.py            # seeds 0, 1, 2 -> benchmarks/results/demo_mnist1d.json

README and the docs' Getting started page quote its accuracy and time figures from that file
(a test checks that they agree).
Accuracies depend on the machine: XLA's CPU and GPU kernels sum in different orders, so
the same seed can land a few tenths of a point apart elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "demo_mnist1d.json"


def machine() -> dict[str, object]:
    """What the figures depend on: the processor, the core count and the library versions."""
    import jax

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {name: metadata.version(name) for name in ("jax", "jaxlib", "optax", "flax", "numpy", "mnist1d")}
    return {
        "processor": model,
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "versions": versions,
    }


def accuracy_range(results: dict, title_start: str) -> tuple[float, float]:
    """The lowest and highest test accuracy over the seeds of the run whose title starts so."""
    (runs,) = [runs for title, runs in results["runs"].items() if title.startswith(title_start)]
    accuracies = [run["test_accuracy"] for run in runs.values()]
    return min(accuracies), max(accuracies)


def markdown(results: dict) -> str:
    """The Getting started page's results table: test accuracy per seed, mean and range, and the training time."""
    seeds = [str(seed) for seed in results["seeds"]]
    rows = [
        "| optimizer | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean | range | train time |",
        "|---" * (len(seeds) + 4) + "|",
    ]
    for title, runs in results["runs"].items():
        accuracies = [runs[seed]["test_accuracy"] for seed in seeds]
        seconds = [runs[seed]["train_seconds"] for seed in seeds]
        rows.append(
            f"| `{title}` | "
            + " | ".join(f"{a:.3f}" for a in accuracies)
            + f" | **{sum(accuracies) / len(accuracies):.3f}** | {min(accuracies):.3f}-{max(accuracies):.3f}"
            + f" | {min(seconds):.1f}-{max(seconds):.1f} s |"
        )
    machine = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    rows.append("")
    rows.append(f"{measured_on(results)}, Python {machine['python']}, {versions}; train time includes compilation.")
    return "\n".join(rows)


def measured_on(results: dict) -> str:
    """Where and when a results file was measured, as its tables' footnotes begin."""
    machine = results["machine"]
    return f"Measured {results['date']} on {machine['cores']} cores of an {machine['processor']} ({machine['backend']})"


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from rmsprop_jax.demo import cli

    runs: dict[str, dict[str, dict[str, float]]] = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            assert cli.main(["--seed", str(seed), "--compare", "--out", out]) == 0
            elapsed = time.perf_counter() - start
            metrics = json.loads((Path(out) / "metrics.json").read_text())
        records = {metrics["title"]: metrics, **{m["title"]: m for m in metrics["baselines"].values()}}
        for title, record in records.items():
            runs.setdefault(title, {})[str(seed)] = {
                "test_accuracy": record["test_accuracy"],
                "train_seconds": round(record["train_seconds"], 2),
            }
        print(f"seed {seed}: {elapsed:.1f} s for the three runs", file=sys.stderr)
    results = {
        "command": "python3 -m rmsprop_jax.demo --seed SEED --compare (defaults otherwise)",
        "steps": metrics["steps"],
        "batch_size": metrics["batch_size"],
        "seeds": args.seeds,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
