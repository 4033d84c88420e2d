"""A/B of two checkouts' compiled update: is the HLO the same, and what does tracing cost?

For each state storage, both checkouts build ``rmsprop_jax.rmsprop`` on the same params
(16 leaves of 256 x 256 and 16 of 256), lower and compile the donated, jitted update, and
report the compiled HLO's hash (source locations stripped: they name the checkout's files),
its fusion count, and the median time of 7 fresh traces (``jax.jit(...).lower``). The two
checkouts run alternately, each measurement in its own process, ``--rounds`` times; the
spread between rounds of one checkout is the A/A control.

    python benchmarks/ab_trace.py /path/to/checkout_a /path/to/checkout_b --out results/ab.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

CONFIGS = {
    "float32_momentum": {"momentum": 0.9},
    "bfloat16_momentum": {"momentum": 0.9, "state_dtype": "bfloat16"},
    "float16": {"state_dtype": "float16"},
    "8bit_momentum": {"momentum": 0.9, "state_dtype": "8bit"},
    "8bit_centered": {"centered": True, "state_dtype": "8bit"},
}

MEASURE = r"""
import hashlib, json, re, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, optax
import rmsprop_jax
assert rmsprop_jax.__file__.startswith(sys.argv[1]), rmsprop_jax.__file__
configs, leaves = json.loads(sys.argv[2]), int(sys.argv[3])
params = {f"w{i}": jnp.ones((256, 256)) for i in range(leaves)} | {f"b{i}": jnp.ones(256) for i in range(leaves)}
out = {}
for name, kwargs in configs.items():
    state = rmsprop_jax.rmsprop(1e-3, **kwargs).init(params)
    times = []
    for _ in range(7):
        tx = rmsprop_jax.rmsprop(1e-3, **kwargs)  # a fresh function: no trace cache
        def step(p, s, g, tx=tx):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        start = time.perf_counter()
        lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params)
        times.append(time.perf_counter() - start)
    lines = [line for line in lowered.compile().as_text().splitlines() if not re.match(r'^\d+ [{"]', line)]
    text = re.sub(r"stack_frame_id=\d+", "", re.sub(r", metadata=\{[^}]*\}", "", "\n".join(lines)))
    out[name] = {"hlo": hashlib.sha1(text.encode()).hexdigest()[:12], "fusions": text.count(" fusion("),
                 "trace_s": statistics.median(times)}
print(json.dumps(out))
"""


def measure(checkout: str, leaves: int) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(pathlib.Path(checkout).resolve()), json.dumps(CONFIGS), str(leaves)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="checkout A (its rmsprop_jax is imported from there)")
    parser.add_argument("after", help="checkout B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--leaves", type=int, default=16)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for side in ("before", "after"):
            runs[side].append(measure(getattr(args, side), args.leaves))
    report = {}
    for name in CONFIGS:
        before = [run[name] for run in runs["before"]]
        after = [run[name] for run in runs["after"]]
        b, a = (statistics.median(r["trace_s"] for r in side) for side in (before, after))
        report[name] = {
            "same_hlo": {r["hlo"] for r in before} == {r["hlo"] for r in after},
            "fusions": [before[0]["fusions"], after[0]["fusions"]],
            "trace_ms": [round(1000 * b, 1), round(1000 * a, 1)],
            "trace_ratio": round(a / b, 3),
            "aa_spread": round(max(r["trace_s"] for r in before) / min(r["trace_s"] for r in before), 3),
        }
        print(name, report[name])
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"leaves": 2 * args.leaves, "rounds": args.rounds,
                                                      "configs": report}, indent=2) + "\n")  # fmt: skip
    return report


if __name__ == "__main__":
    main()
