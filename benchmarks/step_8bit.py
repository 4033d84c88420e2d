"""Issue 28: the 8-bit step on one large leaf and on real trees against optax's float32 step, with HLO counts.

    python3 benchmarks/step_8bit.py             # -> results/step-8bit-cpu2core.{json,md} (about 15 min)
    python3 benchmarks/step_8bit.py --rounds 5 --shapes 4096x1024 --trees ResNet-50 --leaves 20 --out /tmp/x
    python3 benchmarks/step_8bit.py --four-bit --rounds 9 --trees ResNet-50 EfficientNet-B0 \
        --out benchmarks/results/step-4bit-cpu2core

For each leaf (4096 x 1024 and 8192 x 2048, float32), variant (plain; centered + momentum) and
form (the update alone; update + ``optax.apply_updates``), three jitted steps with params and
state donated (``timing.donated_timer``): ``optax.rmsprop`` with the same options, a second copy
of it (the A/A control: the noise of comparing equal programs), and ``rmsprop_jax.rmsprop(...,
state_dtype="8bit")``. They are timed interleaved in one process (``timing.interleaved``, a fresh
random order each round, median of ``--rounds``), once on both cores (wall clock) and once in a
child process pinned to one core (``os.sched_setaffinity``) timing the process's CPU time per step,
which a loaded machine disturbs less. Beside each time: the compiled step's loop fusions and its
argument + output bytes per entry (XLA's ``memory_analysis``).

The real trees (``--trees``; default EfficientNet-B0, MobileNetV3-Large, ResNet-50, ViT-B/16 from
``model_trees.py``) are timed the same way with timm's recipe: ``real_models.optax_recipe()`` (and
its A/A copy) against ``presets.timm(..., state_dtype="8bit")``, update + ``apply_updates``. In
this script's process only these three programs exist, unlike ``real_models.py``'s full run,
which holds every contender's programs for four trees (``benchmarks/NOTES.md``, "8-bit on real
trees"). ``--four-bit`` adds ``state_dtype="4bit"`` as a fourth contender, interleaved with the
others, and its ratio to the 8-bit step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_trees
from real_models import RECIPE as RECIPE_OPTIONS
from real_models import TREES, arrays, contenders
from timing import donated_timer, hlo_summary, interleaved, run_meta, write_results

import rmsprop_jax
from rmsprop_jax import presets

RESULTS = Path(__file__).resolve().parent / "results" / "step-8bit-cpu2core"
SHAPES = {"4096x1024": (4096, 1024), "8192x2048": (8192, 2048)}
RECIPE = "timm recipe"
VARIANTS: dict[str, dict[str, Any]] = {"plain": {}, "centered+momentum": {"centered": True, "momentum": 0.9}}
FORMS = ("update", "update+apply")
CONTENDERS = ("optax", "optax (A/A)", "8-bit")
FOUR_BIT = "4-bit"
NARROW = {"8-bit": "8bit", FOUR_BIT: "4bit"}


def _transformation(contender: str, options: dict[str, Any]) -> optax.GradientTransformation:
    if contender in NARROW:
        return rmsprop_jax.rmsprop(1e-3, state_dtype=NARROW[contender], **options)
    return optax.rmsprop(1e-3, **options)


def _tree_contenders(names: Sequence[str]) -> dict[str, optax.GradientTransformation]:
    """timm's recipe per contender (``real_models.contenders``; the 4-bit one with its ``state_dtype``)."""
    made = contenders([name for name in names if name != FOUR_BIT])
    if FOUR_BIT in names:
        made[FOUR_BIT] = presets.timm(**RECIPE_OPTIONS, state_dtype="4bit")
    return made


def _step(tx: optax.GradientTransformation, form: str) -> Callable:
    if form == "update":
        return jax.jit(lambda p, s, g: (p, *tx.update(g, s, p)[::-1]), donate_argnums=(1,))

    def step(p: Any, s: Any, g: Any) -> tuple[Any, Any]:
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(step, donate_argnums=(0, 1))


def _row(
    name: str,
    variant: str,
    form: str,
    entries: int,
    cases: dict[str, tuple[Callable, Any, Any, Any]],
    rounds: int,
    clock: Callable[[], float],
    names: Sequence[str] = CONTENDERS,
) -> dict[str, Any]:
    """One row: each contender's ``(step, params, state, grads)`` timed interleaved, with its HLO counts."""
    timers, hlo = {}, {}
    for contender, (step, p, state, grads) in cases.items():
        summary = hlo_summary(step.lower(p, state, grads).compile())
        hlo[contender] = {
            "fusions": summary["fusions"],
            "bytes_per_entry": round((summary["argument_bytes"] + summary["output_bytes"]) / entries, 2),
        }
        timers[contender] = donated_timer(step, p, state, grads, clock, carried=2)
    times = interleaved(timers, rounds)
    medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
    row: dict[str, Any] = {"leaf": name, "variant": variant, "form": form}
    for contender in names:
        row[contender] = {"ms": round(medians[contender], 2), **hlo[contender]}
    row["8-bit / optax"] = round(medians["8-bit"] / medians["optax"], 2)
    if FOUR_BIT in names:
        row["4-bit / 8-bit"] = round(medians[FOUR_BIT] / medians["8-bit"], 2)
    row["A/A"] = round(medians["optax (A/A)"] / medians["optax"], 2)
    print(json.dumps(row), flush=True)
    return row


def measure(
    rounds: int,
    clock: Callable[[], float],
    shapes: Sequence[str] = tuple(SHAPES),
    trees: Sequence[str] = TREES,
    leaves: int | None = None,
    names: Sequence[str] = CONTENDERS,
) -> list[dict[str, Any]]:
    """Every cell's medians (ms) and HLO counts, timed with ``clock``: the one-leaf rows, then the trees."""
    rows = []
    for shape_name in shapes:
        shape = SHAPES[shape_name]
        params = jax.random.normal(jax.random.key(0), shape)
        grads = jax.random.normal(jax.random.key(1), shape)
        for variant, options in VARIANTS.items():
            for form in FORMS:
                cases = {}
                for contender in names:
                    tx = _transformation(contender, options)
                    p = params + 0
                    cases[contender] = (_step(tx, form), p, tx.init(p), grads)
                rows.append(_row(shape_name, variant, form, params.size, cases, rounds, clock, names))
                del cases
    loaded = model_trees.load() if trees else {}
    for tree in trees:
        tree_shapes = model_trees.first_leaves(loaded[tree], leaves)
        params, grads = arrays(tree_shapes, 0), arrays(tree_shapes, 1, 1e-2)
        entries = sum(leaf.size for leaf in params.values())
        cases = {}
        for contender, tx in _tree_contenders(names).items():
            p = jax.tree.map(lambda x: x + 0, params)
            cases[contender] = (_step(tx, "update+apply"), p, tx.init(p), grads)
        rows.append(_row(tree, RECIPE, "update+apply", entries, cases, rounds, clock, names))
        del cases
    return rows


def _markdown(results: dict[str, Any]) -> str:
    if FOUR_BIT in results["two_cores"][0]:
        return _markdown_4bit(results)
    lines = [
        "# 8-bit step on one leaf and on real trees, 2-core CPU",
        "",
        f"`{results['meta']['command']}`, {results['meta']['date']}, jax {results['meta']['jax']}.",
        "Times are medians in ms: wall clock on 2 cores, and CPU time in a process pinned to one core.",
        "",
        "| leaf or tree | variant | form | optax ms (2 cores / 1 core) | 8-bit ms | 8-bit / optax | A/A "
        "| 1-core 8-bit / optax | 1-core A/A | fusions optax / 8-bit | bytes per entry optax / 8-bit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for wall, one in zip(results["two_cores"], results["one_core"], strict=True):
        lines.append(
            f"| {wall['leaf']} | {wall['variant']} | {wall['form']} "
            f"| {wall['optax']['ms']} / {one['optax']['ms']} | {wall['8-bit']['ms']} / {one['8-bit']['ms']} "
            f"| {wall['8-bit / optax']} | {wall['A/A']} | {one['8-bit / optax']} | {one['A/A']} "
            f"| {wall['optax']['fusions']} / {wall['8-bit']['fusions']} "
            f"| {wall['optax']['bytes_per_entry']} / {wall['8-bit']['bytes_per_entry']} |"
        )
    return "\n".join(lines) + "\n"


def _markdown_4bit(results: dict[str, Any]) -> str:
    """The 4-bit run's table: the 4-bit step against the 8-bit one (and both against optax's)."""
    lines = [
        "# 4-bit step against the 8-bit one on one leaf and on real trees, 2-core CPU",
        "",
        f"`{results['meta']['command']}`, {results['meta']['date']}, jax {results['meta']['jax']}.",
        "Times are medians in ms: wall clock on 2 cores, and CPU time in a process pinned to one core.",
        "",
        "| leaf or tree | variant | form | optax ms | 8-bit ms | 4-bit ms (2 cores / 1 core) | 4-bit / 8-bit "
        "| 1-core 4-bit / 8-bit | 8-bit / optax | A/A | fusions 8-bit / 4-bit | bytes per entry 8-bit / 4-bit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for wall, one in zip(results["two_cores"], results["one_core"], strict=True):
        lines.append(
            f"| {wall['leaf']} | {wall['variant']} | {wall['form']} | {wall['optax']['ms']} | {wall['8-bit']['ms']} "
            f"| {wall[FOUR_BIT]['ms']} / {one[FOUR_BIT]['ms']} | {wall['4-bit / 8-bit']} | {one['4-bit / 8-bit']} "
            f"| {wall['8-bit / optax']} | {wall['A/A']} | {wall['8-bit']['fusions']} / {wall[FOUR_BIT]['fusions']} "
            f"| {wall['8-bit']['bytes_per_entry']} / {wall[FOUR_BIT]['bytes_per_entry']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES), help="the one-leaf rows")
    parser.add_argument("--trees", nargs="*", default=list(TREES), choices=list(TREES))
    parser.add_argument("--leaves", type=int, default=None, help="each tree cut to its first N leaves (tests)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--four-bit", action="store_true", help="add state_dtype='4bit' as a contender")
    parser.add_argument("--one-core", action="store_true", help="(internal) pinned to one core, CPU time")
    args = parser.parse_args(argv)
    names = (*CONTENDERS, FOUR_BIT) if args.four_bit else CONTENDERS
    if args.one_core:
        print(json.dumps(measure(args.rounds, time.process_time, args.shapes, args.trees, args.leaves, names)))
        return {}
    two_cores = measure(args.rounds, time.perf_counter, args.shapes, args.trees, args.leaves, names)
    child = [sys.executable, __file__, "--one-core", "--rounds", str(args.rounds)]
    child += ["--four-bit"] if args.four_bit else []
    child += ["--shapes", *args.shapes, "--trees", *args.trees]
    child += [] if args.leaves is None else ["--leaves", str(args.leaves)]
    pinned = subprocess.run(
        child, check=True, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, {1})
    )
    one_core = json.loads(pinned.stdout.strip().splitlines()[-1])
    results = {
        "meta": run_meta("step_8bit.py", None if argv is None else list(argv)),
        "two_cores": two_cores,
        "one_core": one_core,
    }
    write_results(args.out, results, _markdown)
    print(_markdown(results))
    return results


if __name__ == "__main__":
    jnp.zeros(())  # start the backend before timing anything
    main()
