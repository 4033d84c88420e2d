"""Issue 13 groundwork: same-shape small leaves stacked into groups, against per-leaf steps.

    python3 benchmarks/packing_prototype.py      # -> benchmarks/results/packing_prototype-cpu2core.json

A prototype wrapper, not the design: ``stacked(tx, cap)`` groups consecutive leaves of one
shape and dtype into groups of at most ``cap`` leaves, keeps ``tx``'s state for each group
stacked on a new leading axis (never ravelled), stacks the gradients per group every step
and slices the updates back. The RMSProp math is elementwise, so ``tx`` runs unchanged on
the stacked arrays. Measured, interleaved in one process with ``optax.rmsprop`` and an A/A
copy of it (jitted and donated, shuffled each round, median of ``--repeats``): the step
time and the trace + compile time, for trees of many equal leaves and for each variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite beside this script
import suite

RESULTS = Path(__file__).resolve().parent / "results" / "packing_prototype-cpu2core.json"
VARIANTS = {"plain": {}, "momentum": {"momentum": 0.9}, "centered+momentum": {"centered": True, "momentum": 0.9}}


def _groups(leaves: list[jax.Array], cap: int) -> list[list[int]]:
    """Consecutive runs of leaves with one shape and dtype, at most ``cap`` leaves each."""
    groups: list[list[int]] = []
    for index, leaf in enumerate(leaves):
        last = groups[-1] if groups else None
        if last and len(last) < cap and leaves[last[0]].shape == leaf.shape and leaves[last[0]].dtype == leaf.dtype:
            last.append(index)
        else:
            groups.append([index])
    return groups


def stacked(tx: optax.GradientTransformation, cap: int) -> optax.GradientTransformation:
    """``tx`` with its state kept per group of same-shape leaves, stacked on a new leading axis."""

    def pack(leaves: list[jax.Array], groups: list[list[int]]) -> list[jax.Array]:
        return [jnp.stack([leaves[i] for i in group]) for group in groups]

    def init(params: list[jax.Array]) -> Any:
        return tx.init(pack(params, _groups(params, cap)))

    def update(grads: list[jax.Array], state: Any, params: list[jax.Array] | None = None) -> tuple:
        groups = _groups(grads, cap)
        packed_params = None if params is None else pack(params, groups)
        updates, state = tx.update(pack(grads, groups), state, packed_params)
        out: list[jax.Array] = [jnp.zeros(())] * len(grads)
        for group, stacked_update in zip(groups, updates, strict=True):
            for position, index in enumerate(group):
                out[index] = stacked_update[position]
        return out, state

    return optax.GradientTransformation(init, update)


def measure(leaves: int, size: int, variant: str, cap: int, repeats: int) -> dict[str, Any]:
    """Step and trace + compile time of each contender on ``leaves`` float32 leaves of ``size``."""
    kwargs = {"decay": 0.9, "eps": 1e-8, **VARIANTS[variant]}
    contenders = {
        "optax": optax.rmsprop(1e-3, **kwargs),
        suite.CONTROL: optax.rmsprop(1e-3, **kwargs),
        "rmsprop_jax per leaf": rmsprop_jax.rmsprop(1e-3, **kwargs),
        f"rmsprop_jax stacked (groups of {cap})": stacked(rmsprop_jax.rmsprop(1e-3, **kwargs), cap),
    }
    grads = [jax.random.normal(key, (size,)) for key in jax.random.split(jax.random.key(0), leaves)]
    timers: dict[str, Callable[[], float]] = {}
    compile_s: dict[str, float] = {}
    warm = contenders[suite.CONTROL]  # a throwaway compile first: the first one pays JAX's one-time costs
    suite._jax_step(warm).lower(grads[:2], warm.init(grads[:2]), grads[:2]).compile()
    for label, tx in contenders.items():
        step = suite._jax_step(tx)
        params = [g * 0.5 for g in grads]
        start = time.perf_counter()
        step.lower(params, tx.init(params), grads).compile()
        compile_s[label] = time.perf_counter() - start
        timers[label] = suite.donated_timer(step, params, tx.init(params), grads)
    times = suite.interleaved(timers, repeats)
    medians = {label: 1e3 * statistics.median(samples) for label, samples in times.items()}
    return {
        "leaves": leaves,
        "size": size,
        "variant": variant,
        "median_ms": medians,
        "trace_compile_s": compile_s,
        "step_over_optax": {label: ms / medians["optax"] for label, ms in medians.items()},
        "compile_over_optax": {label: s / compile_s["optax"] for label, s in compile_s.items()},
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=["4096x1024", "1024x4096", "256x16384"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--cap", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rows = []
    for tree in args.trees:
        leaves, size = (int(n) for n in tree.split("x"))
        for variant in args.variants:
            rows.append(measure(leaves, size, variant, args.cap, args.repeats))
            row = rows[-1]
            print(
                f"{tree} {variant}: "
                + ", ".join(
                    f"{label} {row['step_over_optax'][label]:.2f}x step / "
                    f"{row['compile_over_optax'][label]:.2f}x compile"
                    for label in row["median_ms"]
                    if label != "optax"
                ),
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cap": args.cap, "repeats": args.repeats, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
