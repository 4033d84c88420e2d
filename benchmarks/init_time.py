"""A first eager ``tx.init(params)`` on the real models' trees, each in a process of its own.

    python3 benchmarks/init_time.py     # -> results/init-time-cpu2core.{json,md} (about 45 min)

What a user waits for before the first step: an eager init compiles whatever it runs op by op,
once per shape, in each new process (a notebook's first cell, a job's start). So each
measurement is one ``tx.init(params)`` call (``jax.block_until_ready`` around it) in a fresh
Python process, after the params are made and ready; the contenders of a tree run one after
another in a fresh random order each round, median of ``--rounds`` rounds. Contenders are those
of ``real_models.py`` (optax's closest settings to timm's recipe, and ``presets.timm`` per leaf,
packed, 8-bit and 8-bit + packed); trees are ``model_trees``' six (``results/model-trees.json``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_trees
import real_models
import timing

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "init-time-cpu2core"
CONTENDERS = (real_models.OPTAX, *real_models.OURS)

_ONE_INIT = """
import sys, time
sys.path.insert(0, {here!r})
import jax, model_trees, real_models
tree = model_trees.first_leaves(model_trees.load()[{tree!r}], {leaves!r})
params = jax.block_until_ready(real_models.arrays(tree, 0, 0.5))
tx = real_models.contenders([{contender!r}])[{contender!r}]
start = time.perf_counter()
jax.block_until_ready(tx.init(params))
print(time.perf_counter() - start)
"""


def one_init(tree: str, contender: str, leaves: int | None) -> float:
    """Seconds of one eager init of ``contender`` on ``tree`` in a fresh process."""
    code = _ONE_INIT.format(here=str(HERE), tree=tree, contender=contender, leaves=leaves)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# A first eager init, each in a fresh process (seconds, median; ratio to optax)",
        "",
        f"{meta['date']}, {meta['machine']}, jax {meta['jax']}, optax {meta['optax']}, "
        f"rmsprop_jax {meta['rmsprop_jax']}; `{meta['command']}`; median of {meta['rounds']} rounds.",
        "",
        "| tree | " + " | ".join(meta["contenders"]) + " |",
        "|---" * (len(meta["contenders"]) + 1) + "|",
    ]
    for row in results["rows"]:
        base = row["seconds"].get(real_models.OPTAX)
        cells = [
            f"{row['seconds'][c]:.2f} s" + ("" if base is None else f" ({row['seconds'][c] / base:.2f}x)")
            for c in meta["contenders"]
        ]
        lines.append(f"| {row['tree']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=list(model_trees.load()))
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leaves", type=int, default=None, help="only each tree's first N leaves (tests)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    meta = {
        **timing.run_meta("init_time.py", None if argv is None else list(argv)),
        "rounds": args.rounds,
        "contenders": args.contenders,
    }
    results: dict[str, Any] = {"meta": meta, "rows": []}
    order = random.Random(0)
    for tree in args.trees:
        samples: dict[str, list[float]] = {contender: [] for contender in args.contenders}
        for _ in range(args.rounds):
            for contender in order.sample(args.contenders, len(args.contenders)):
                samples[contender].append(one_init(tree, contender, args.leaves))
        seconds = {contender: statistics.median(times) for contender, times in samples.items()}
        results["rows"].append({"tree": tree, "seconds": seconds, "samples": samples})
        print(tree, {c: round(s, 2) for c, s in seconds.items()}, flush=True)
        timing.write_results(args.out, results, markdown)
    return results


if __name__ == "__main__":
    main()
