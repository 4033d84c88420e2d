"""Issue 22: RMSProp on the parameter trees of real models, timm's EfficientNet recipe.

    python3 benchmarks/real_models.py          # -> results/real-models-cpu2core.{json,md} (about 40 min)
    python3 benchmarks/real_models.py --trees EfficientNet-B0 --parts compile --rounds 3 --out /tmp/x

Trees: the committed parameter shapes of EfficientNet-B0, MobileNetV3-Large, ResNet-50 and
ViT-B/16 (``results/model-trees.json``, :mod:`model_trees`): one float32 leaf per weight,
biases and norm scales as leaves of their own. Recipe: timm's RMSpropTF settings for
EfficientNet, ``presets.timm(lr=1e-2, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5)``.

Contenders, each a jitted training step (update + ``optax.apply_updates``, params and state
donated, ``suite._jax_step``):

- ``optax``: ``optax.chain(optax.add_decayed_weights(1e-5), optax.rmsprop(1e-2, decay=0.9,
  eps=1e-3, initial_scale=1.0, momentum=0.9))``, the closest optax settings (timm's coupled
  decay, accumulator from 1, eps inside the root, lr inside the momentum buffer);
- ``optax (A/A)``: a second copy of it, the noise of comparing equal programs;
- ``per leaf``, ``packed``, ``8-bit``, ``8-bit + packed``: ``presets.timm`` with
  ``pack_small_leaves`` and ``state_dtype="8bit"`` off and on;
- ``timm RMSpropTF foreach``: ``timm.optim.RMSpropTF(..., foreach=True)`` in torch on tensors
  of the same shapes (its ``step()`` only; the JAX steps include ``apply_updates``, which
  torch does in place inside ``step()``).

Parts (``--parts``):

- ``step``: every contender's step, timed interleaved in one process (``timing.interleaved``,
  a fresh random order each round, one warm-up call each), median of ``--repeats`` rounds;
- ``compile``: ``jax.jit(step).lower(...)`` and ``.compile()`` of a fresh step, after a full
  garbage collection, interleaved, median of ``--rounds`` rounds
  (``timing.interleaved_trace_and_compile``);
- ``floor``: the bytes a float32 step with momentum must move (params, gradients, ``nu`` and the
  momentum buffer read; params, ``nu`` and the buffer written: 28 B per param) over the bandwidth
  of a donated ``p + 0.5 * g`` pass on the same leaves (``suite.pass_bandwidth``);
- bytes: the state's bytes per param (``rmsprop_jax.state_report``; torch's state tensors;
  optax's state arrays) and XLA's memory count of the compiled step
  (``memory_analysis()``: ``peak_memory_in_bytes``, and the temporaries apart; the bytes of its
  arguments and outputs per param) and its loop fusions (``timing.hlo_summary``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rmsprop_jax
from rmsprop_jax import presets

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite beside this script
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # timm's RMSpropTF without torchvision
import model_trees
import suite
import timing

HERE = Path(__file__).resolve().parent

RESULTS = HERE / "results" / "real-models-cpu2core"
TREES = ("EfficientNet-B0", "MobileNetV3-Large", "ResNet-50", "ViT-B/16")
RECIPE = {"lr": 1e-2, "alpha": 0.9, "eps": 1e-3, "momentum": 0.9, "weight_decay": 1e-5}
OURS = {
    "per leaf": {},
    "packed": {"pack_small_leaves": True},
    "8-bit": {"state_dtype": "8bit"},
    "8-bit + packed": {"state_dtype": "8bit", "pack_small_leaves": True},
}
OPTAX, CONTROL, TORCH = "optax", "optax (A/A)", "timm RMSpropTF foreach"


def optax_recipe() -> optax.GradientTransformation:
    """optax's closest settings to timm's recipe (coupled weight decay, accumulator from 1)."""
    return optax.chain(
        optax.add_decayed_weights(RECIPE["weight_decay"]),
        optax.rmsprop(
            RECIPE["lr"], decay=RECIPE["alpha"], eps=RECIPE["eps"], initial_scale=1.0, momentum=RECIPE["momentum"]
        ),
    )


def contenders(names: Sequence[str]) -> dict[str, optax.GradientTransformation]:
    """The JAX contenders named (``OPTAX``, ``CONTROL`` and the keys of ``OURS``), in that order."""
    made: dict[str, optax.GradientTransformation] = {}
    for name in names:
        if name in (OPTAX, CONTROL):
            made[name] = optax_recipe()
        elif name in OURS:
            made[name] = presets.timm(**RECIPE, **OURS[name])
    return made


def arrays(tree: dict[str, tuple[int, ...]], seed: int, scale: float = 1.0) -> dict[str, jax.Array]:
    """A float32 array of each leaf's shape: seeded normals times ``scale``."""
    keys = jax.random.split(jax.random.key(seed), len(tree))
    return {path: scale * jax.random.normal(key, shape) for key, (path, shape) in zip(keys, tree.items(), strict=True)}


def state_bytes(state: Any) -> int:
    """The bytes of a state's arrays (a plan or a step count adds nothing here: it is not an array of the tree)."""
    return sum(int(np.prod(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(state))


class TimmContender:
    """timm's ``RMSpropTF`` (foreach) on torch tensors of the tree's shapes, each with a gradient."""

    def __init__(self, tree: dict[str, tuple[int, ...]]) -> None:
        import framework_runs
        import torch

        torch.manual_seed(0)
        torch.set_num_threads(os.cpu_count() or 1)
        self.params = [torch.randn(shape) * 0.5 for shape in tree.values()]
        for p in self.params:
            p.grad = torch.randn(p.shape)
        rmsprop_tf = framework_runs.load_timm_rmsprop_tf()
        self.optimizer = rmsprop_tf(self.params, **RECIPE, foreach=True)
        self.optimizer.step()  # warm-up: allocates the state

    def step(self) -> float:
        start = time.perf_counter()
        self.optimizer.step()
        return time.perf_counter() - start

    def state_bytes(self) -> int:
        return suite.torch_state_bytes(self.optimizer)


def _memory(compiled: Any) -> dict[str, int]:
    analysis = compiled.memory_analysis()
    return {
        "peak_bytes": int(analysis.peak_memory_in_bytes),
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
        "alias_bytes": int(analysis.alias_size_in_bytes),
    }


def measure_bytes(tree: dict[str, tuple[int, ...]], txs: dict[str, optax.GradientTransformation]) -> dict[str, Any]:
    """Each contender's state bytes per param, its plan (for ours) and the compiled step's memory."""
    params = model_trees.params(tree)
    entries = sum(math.prod(shape) for shape in tree.values())
    out: dict[str, Any] = {}
    for label, tx in txs.items():
        state = jax.eval_shape(tx.init, params)
        row: dict[str, Any] = {"state_bytes_per_param": state_bytes(state) / entries}
        if label in OURS:
            report = rmsprop_jax.state_report(state)
            row["state_bytes_per_param"] = report.bytes_per_param
            plan = rmsprop_jax.packing_plan(state)
            row["groups"] = sum(len(group) > 1 for group in plan.groups)
            row["packed_leaves"] = sum(len(group) for group in plan.groups if len(group) > 1)
            row["eight_bit_leaves"] = sum(leaf.eight_bit == "yes" for leaf in report.leaves)
        compiled = suite._jax_step(tx).lower(params, state, params).compile()
        row["memory"] = _memory(compiled)
        row["fusions"] = timing.hlo_summary(compiled)["fusions"]
        out[label] = row
    return out


def measure_steps(
    tree: dict[str, tuple[int, ...]], txs: dict[str, optax.GradientTransformation], repeats: int, torch: bool
) -> dict[str, Any]:
    """Each contender's median step (ms) and spread, interleaved, and the ratios to optax's."""
    grads = arrays(tree, 1)
    timers: dict[str, Callable[[], float]] = {}
    for label, tx in txs.items():
        params = arrays(tree, 0, 0.5)
        timers[label] = timing.donated_timer(suite._jax_step(tx), params, tx.init(params), grads)
    if torch:
        timm_run = TimmContender(tree)
        timers[TORCH] = timm_run.step
    samples = timing.interleaved(timers, repeats)
    results: dict[str, Any] = {}
    for label, times in samples.items():
        median, spread = timing.median_spread(times)
        results[label] = {"median_ms": 1e3 * median, "spread_ms": 1e3 * spread}
    base = results[OPTAX]["median_ms"]
    for row in results.values():
        row["over_optax"] = row["median_ms"] / base
    sizes = [math.prod(shape) for shape in tree.values()]
    bandwidth = suite.pass_bandwidth(sizes, "float32", repeats)
    # The fewest bytes a float32 step with momentum moves: p, g, nu, trace read; p, nu, trace written.
    floor_ms = 1e3 * 7 * 4 * sum(sizes) / bandwidth
    results["floor"] = {"median_ms": floor_ms, "over_optax": floor_ms / base, "pass_bandwidth_gbs": bandwidth / 1e9}
    if torch:
        results[TORCH]["state_bytes_per_param"] = timm_run.state_bytes() / sum(math.prod(s) for s in tree.values())
    return results


def measure_compile(
    tree: dict[str, tuple[int, ...]], txs: dict[str, optax.GradientTransformation], rounds: int
) -> dict[str, Any]:
    """Each contender's median trace and compile seconds over interleaved rounds, and ratios to optax's."""

    def maker(tx: optax.GradientTransformation) -> Callable[[], tuple[Any, tuple]]:
        def make() -> tuple[Any, tuple]:
            params = model_trees.params(tree)
            return suite._jax_step(tx), (params, jax.eval_shape(tx.init, params), params)

        return make

    warm = txs[next(iter(txs))]  # a throwaway compile first: the first one pays JAX's one-time costs
    timing.trace_and_compile(maker(warm))
    results = timing.interleaved_trace_and_compile({label: maker(tx) for label, tx in txs.items()}, rounds)
    base = results[OPTAX]["total_s"]
    for row in results.values():
        row["over_optax"] = row["total_s"] / base
    return results


def _cells(row: dict[str, Any], label: str) -> list[str]:
    """One contender's cells of the table: what a part did not measure reads ``-``."""
    step = row.get("step", {}).get(label)
    comp = row.get("compile", {}).get(label)
    size = row.get("bytes", {}).get(label, {})
    state = size.get("state_bytes_per_param", (step or {}).get("state_bytes_per_param"))
    memory = size.get("memory", {})
    peak = memory.get("peak_bytes")
    moved = memory["argument_bytes"] + memory["output_bytes"] if "argument_bytes" in memory else None
    return [
        f"{step['median_ms']:.1f}" if step else "-",
        f"{step['over_optax']:.2f}" if step else "-",
        str(size["fusions"]) if "fusions" in size else "-",
        f"{moved / row['params']:.1f}" if moved is not None else "-",
        f"{comp['trace_s']:.2f} + {comp['compile_s']:.2f}" if comp else "-",
        f"{comp['over_optax']:.2f}" if comp else "-",
        f"{state:.3f}" if state is not None else "-",
        f"{peak / 2**20:.0f}" if peak is not None else "-",
        f"{size['packed_leaves']}/{row['leaves']} ({size['groups']})" if "groups" in size else "-",
    ]


def markdown(results: dict[str, Any]) -> str:
    """The docs' table: per tree and contender, step against optax with the compiled step's loop fusions and the
    bytes of its arguments and outputs per param (what a donated step reads and writes at least), trace + compile
    against optax, state bytes, peak memory."""
    lines = [
        "| tree | contender | step ms | step / optax | fusions | B/param in + out | trace + compile s "
        "| compile / optax | state B/param | peak MB | packed leaves (groups) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        labels = dict.fromkeys([*row.get("bytes", {}), *row.get("compile", {}), *row.get("step", {})])
        for label in labels:
            lines.append(f"| {row['tree']} | {label} | " + " | ".join(_cells(row, label)) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(results: dict[str, Any]) -> str:
    """The README's table: per tree, packed and 8-bit against optax (step, compile, state bytes)."""
    lines = [
        "| model (params, leaves) | optax step ms | per leaf / packed step | per leaf / packed compile "
        "| 8-bit step | 8-bit state B/param (optax's) | timm in torch, step |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        step, comp, size = row["step"], row["compile"], row["bytes"]
        lines.append(
            f"| {row['tree']} ({row['params'] / 1e6:.1f}M, {row['leaves']}) | {step[OPTAX]['median_ms']:.1f} "
            f"| {step['per leaf']['over_optax']:.2f}x / {step['packed']['over_optax']:.2f}x "
            f"| {comp['per leaf']['over_optax']:.2f}x / {comp['packed']['over_optax']:.2f}x "
            f"| {step['8-bit']['over_optax']:.2f}x | {size['8-bit']['state_bytes_per_param']:.2f} "
            f"({size[OPTAX]['state_bytes_per_param']:.0f}) | {step[TORCH]['over_optax']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=list(TREES))
    parser.add_argument("--contenders", nargs="+", default=[OPTAX, CONTROL, *OURS])
    parser.add_argument(
        "--parts", nargs="+", default=["bytes", "compile", "step"], choices=["bytes", "compile", "step"]
    )
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--leaves", type=int, default=None, help="only each tree's first N leaves (the tests' tiny run)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    trees = model_trees.load()
    txs = contenders([OPTAX, *(name for name in args.contenders if name != OPTAX)])
    meta = {
        **timing.run_meta("real_models.py", None if argv is None else list(argv)),
        "recipe": RECIPE,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "leaves": args.leaves,
    }
    results: dict[str, Any] = {"meta": meta, "rows": []}
    for name in args.trees:
        tree = model_trees.first_leaves(trees[name], args.leaves)
        row: dict[str, Any] = {
            "tree": name,
            "leaves": len(tree),
            "params": sum(math.prod(shape) for shape in tree.values()),
        }
        results["rows"].append(row)
        for part in args.parts:
            if part == "bytes":
                row["bytes"] = measure_bytes(tree, txs)
            elif part == "compile":
                row["compile"] = measure_compile(tree, txs, args.rounds)
            else:
                row["step"] = measure_steps(tree, txs, args.repeats, not args.no_torch)
            timing.write_results(args.out, results, markdown)
            summary = {label: round(r["over_optax"], 2) for label, r in row.get(part, {}).items() if "over_optax" in r}
            print(f"{name} {part}: {summary or 'done'}", flush=True)
    return results


if __name__ == "__main__":
    main()
