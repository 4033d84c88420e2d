"""Issue 13: ``pack_small_leaves`` against per-leaf steps and optax, tree by tree.

    python3 benchmarks/packing.py                      # -> results/packing-cpu2core.json (about 25 min)
    python3 benchmarks/packing.py --trees 512x8192 --variants momentum --out /tmp/grid.json

Method: for each tree and variant, four contenders are jitted and donated, as a training
step is (``timing.donated_timer``): ``optax.rmsprop``, a second copy of it (the A/A control:
the noise of comparing equal code), ``rmsprop_jax.rmsprop`` with packing off, and with
packing on. Their steps are timed interleaved in one process, in a fresh random order each
round (``timing.interleaved``), and the median of ``--repeats`` rounds is reported with its
ratio to optax. Trace + compile time is one ``lower(...).compile()`` per contender, after a
throwaway compile that pays JAX's one-time costs; the eager ``tx.init`` before it is timed
apart (``eager_init_s``). Peak memory is XLA's own count for the
compiled step (``memory_analysis()``: temporaries, and arguments + outputs), packing off
against on. For each tree the compiled HLO of packing on and off is compared as text.

Trees (float32 leaves): ``NxS`` is N leaves of S entries; ``mixed`` is 2048 leaves drawn
(seeded) from 16 shapes of 64 to 16K entries, in random order; ``transformer`` is the
params tree of a Flax NNX ViT-Tiny-like encoder (12 blocks, width 192, q/k/v/out
projections, biases and norm scales as separate leaves: 200 leaves); ``16x1048576`` is the
large-leaf control, where packing must change nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

import rmsprop_jax
from rmsprop_jax import _layouts
from rmsprop_jax._leaf_update import RmsConfig
from rmsprop_jax._state_options import StateOptions
from rmsprop_jax._transform import build_rmsprop

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite beside this script
import suite
import timing

RESULTS = Path(__file__).resolve().parent / "results" / "packing-cpu2core.json"
VARIANTS = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "centered+momentum": {"centered": True, "momentum": 0.9},
}
MIXED_SHAPES = [
    (64,), (128,), (256,), (384,), (512,), (768,), (1024,), (2048,), (4096,), (8192,), (16384,),
    (3, 3, 16), (3, 3, 64), (32, 32), (64, 64), (64, 256),
]  # fmt: skip
OFF, ON = "rmsprop_jax packing off", "rmsprop_jax packing on"


def transformer_shapes(blocks: int = 12, width: int = 192, heads: int = 3) -> list[tuple[int, ...]]:
    """The leaf shapes of a Flax NNX ViT-Tiny-like encoder, from ``nnx.eval_shape`` (nothing allocated)."""
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.norm1 = nnx.LayerNorm(width, rngs=rngs)
            self.attention = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
            self.norm2 = nnx.LayerNorm(width, rngs=rngs)
            self.up = nnx.Linear(width, 4 * width, rngs=rngs)
            self.down = nnx.Linear(4 * width, width, rngs=rngs)

    class Encoder(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.blocks = nnx.List([Block(rngs) for _ in range(blocks)])
            self.norm = nnx.LayerNorm(width, rngs=rngs)

    abstract = nnx.eval_shape(lambda: Encoder(nnx.Rngs(0)))
    return [tuple(leaf.shape) for leaf in jax.tree.leaves(nnx.state(abstract, nnx.Param))]


def tree_shapes(tree: str) -> list[tuple[int, ...]]:
    if tree == "mixed":
        rng = np.random.default_rng(0)
        return [MIXED_SHAPES[i] for i in rng.integers(0, len(MIXED_SHAPES), 2048)]
    if tree == "transformer":
        return transformer_shapes()
    leaves, size = (int(n) for n in tree.split("x"))
    return [(size,)] * leaves


def _hlo(compiled: Any) -> str:
    """A compiled module's text without metadata and names that differ between equal programs."""
    text = compiled.as_text()
    program = text[text.index("\n%") :]  # the computations, after the source-location tables
    return re.sub(r", metadata=\{[^}]*\}", "", program)


def measure(
    tree: str, variant: str, repeats: int, thresholds: _layouts.Thresholds = _layouts.DEFAULT_THRESHOLDS
) -> dict[str, Any]:
    kwargs = {"decay": 0.9, "eps": 1e-8, **VARIANTS[variant]}
    config = RmsConfig(decay=0.9, eps=1e-8, **VARIANTS[variant])
    contenders = {
        "optax": optax.rmsprop(1e-3, **kwargs),
        suite.CONTROL: optax.rmsprop(1e-3, **kwargs),
        OFF: rmsprop_jax.rmsprop(1e-3, **kwargs),
        ON: build_rmsprop(config, {}, 1e-3, state=StateOptions(pack_small_leaves=True), thresholds=thresholds),
    }
    shapes = tree_shapes(tree)
    keys = jax.random.split(jax.random.key(0), len(shapes))
    grads = [jax.random.normal(key, shape) for key, shape in zip(keys, shapes, strict=True)]
    warm = contenders[suite.CONTROL]  # a throwaway compile first: the first one pays JAX's one-time costs
    suite._jax_step(warm).lower(grads[:2], warm.init(grads[:2]), grads[:2]).compile()
    timers: dict[str, Callable[[], float]] = {}
    compile_s: dict[str, float] = {}
    init_s: dict[str, float] = {}
    memory: dict[str, dict[str, int]] = {}
    hlo: dict[str, str] = {}
    for label, tx in contenders.items():
        step = suite._jax_step(tx)
        params = [g * 0.5 for g in grads]
        start = time.perf_counter()
        state = jax.block_until_ready(tx.init(params))
        init_s[label] = time.perf_counter() - start
        start = time.perf_counter()
        compiled = step.lower(params, state, grads).compile()
        compile_s[label] = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        memory[label] = {
            "temp_bytes": int(analysis.temp_size_in_bytes),
            "argument_bytes": int(analysis.argument_size_in_bytes),
            "output_bytes": int(analysis.output_size_in_bytes),
        }
        if label in (OFF, ON):
            hlo[label] = _hlo(compiled)
        timers[label] = timing.donated_timer(step, params, tx.init(params), grads)
    times = timing.interleaved(timers, repeats)
    medians = {label: 1e3 * statistics.median(samples) for label, samples in times.items()}
    plan = rmsprop_jax.packing_plan(jax.eval_shape(contenders[ON].init, grads))
    return {
        "tree": tree,
        "leaves": len(shapes),
        "entries": int(sum(np.prod(shape) for shape in shapes)),
        "variant": variant,
        "groups": sum(len(group) > 1 for group in plan.groups),
        "packed_leaves": sum(len(group) for group in plan.groups if len(group) > 1),
        "median_ms": medians,
        "trace_compile_s": compile_s,
        "eager_init_s": init_s,
        "step_over_optax": {label: ms / medians["optax"] for label, ms in medians.items()},
        "compile_over_optax": {label: s / compile_s["optax"] for label, s in compile_s.items()},
        "on_over_off": {"step": medians[ON] / medians[OFF], "compile": compile_s[ON] / compile_s[OFF]},
        "memory": memory,
        "hlo_identical_on_off": hlo[ON] == hlo[OFF],
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as the Speed page's table: step and compile ratios to optax, on/off, the A/A control, memory."""
    lines = [
        "| tree | variant | packed leaves (groups) | optax step ms | on / optax step | on / optax compile "
        "| on / off step | A/A step / compile | eager init s off -> on | temp MB off -> on | HLO on = off |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        step, compile_ = row["step_over_optax"], row["compile_over_optax"]
        temp = [row["memory"][label]["temp_bytes"] / 2**20 for label in (OFF, ON)]
        init = [row["eager_init_s"][label] for label in (OFF, ON)]
        lines.append(
            f"| {row['tree']} | {row['variant']} | {row['packed_leaves']}/{row['leaves']} ({row['groups']}) "
            f"| {row['median_ms']['optax']:.2f} | {step[ON]:.2f} | {compile_[ON]:.2f} "
            f"| {row['on_over_off']['step']:.2f} "
            f"| {step[suite.CONTROL]:.2f} / {compile_[suite.CONTROL]:.2f} | {init[0]:.2f} -> {init[1]:.2f} "
            f"| {temp[0]:.1f} -> {temp[1]:.1f} "
            f"| {'yes' if row['hlo_identical_on_off'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trees", nargs="+", default=["4096x1024", "1024x4096", "mixed", "transformer", "256x16384", "16x1048576"]
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--group-elements", type=int, default=None, help="override the group cap (an experiment, not an option)"
    )
    args = parser.parse_args(argv)
    thresholds = _layouts.DEFAULT_THRESHOLDS
    if args.group_elements is not None:
        thresholds = thresholds._replace(group_elements=args.group_elements)
    rows = []
    for tree in args.trees:
        for variant in args.variants:
            row = measure(tree, variant, args.repeats, thresholds)
            rows.append(row)
            print(
                f"{tree} {variant} ({row['packed_leaves']}/{row['leaves']} leaves in {row['groups']} groups): "
                f"on {row['step_over_optax'][ON]:.2f}x optax step / {row['compile_over_optax'][ON]:.2f}x compile; "
                f"off {row['step_over_optax'][OFF]:.2f}x / {row['compile_over_optax'][OFF]:.2f}x; "
                f"A/A {row['step_over_optax'][suite.CONTROL]:.2f}x / {row['compile_over_optax'][suite.CONTROL]:.2f}x; "
                f"on/off {row['on_over_off']['step']:.2f} step; HLO identical: {row['hlo_identical_on_off']}",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            meta = {
                "repeats": args.repeats,
                "group_elements": thresholds.group_elements,
                "jax": jax.__version__,
                "optax": optax.__version__,
            }
            args.out.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
