"""How the benchmarks time things: interleaved rounds, donated steps, trace and compile, HLO counts.

Every benchmark script imports these, so that each measures the same way
(``benchmarks/NOTES.md``, "Method"):

- :func:`interleaved` runs every contender once per round, in a fresh random order each round
  (seeded), so that no contender always follows the one that warmed or polluted the caches;
- :func:`donated_timer` times a jitted step with params and state donated, feeding each call's
  outputs to the next as a training loop does, after one warm-up call that compiles;
- :func:`trace_and_compile` times ``jax.jit(f).lower(...)`` and ``.compile()`` of a fresh
  function object (nothing cached), after a full garbage collection (so that collecting the
  previous contender's objects does not land in whichever measurement follows; the
  collector stays on during the timing, as in a user's program), and
  :func:`interleaved_trace_and_compile` takes the median over interleaved rounds;
- :func:`hlo_summary` counts fusions, copies and argument / output bytes of a compiled step.
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

import rmsprop_jax


def mean_and_range(values: list[float]) -> str:
    """A results table's cell: the mean and, in parentheses, the range of some runs' figures."""
    return f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"


def median_spread(times: list[float]) -> tuple[float, float]:
    """The median and the spread (max - min) of some samples."""
    return statistics.median(times), max(times) - min(times)


def interleaved(timers: dict[str, Callable[[], float]], repeats: int, seed: int = 0) -> dict[str, list[float]]:
    """Every timer's samples, ``repeats`` rounds each in a fresh random order (no position bias)."""
    times: dict[str, list[float]] = {label: [] for label in timers}
    order = list(timers)
    shuffler = random.Random(seed)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for label in order:
            times[label].append(timers[label]())
    return times


def donated_timer(
    step: Callable,
    params: Any,
    state: Any,
    grads: Any,
    clock: Callable[[], float] = time.perf_counter,
    carried: int | None = None,
) -> Callable[[], float]:
    """A timer of one donated ``step(params, state, grads)`` call, after one warm-up call (it compiles).

    Each call feeds the previous call's outputs back in, as a training loop does: all of them, or the
    first ``carried`` (a step that also returns its updates). ``clock`` reads the time (default the wall
    clock; ``time.process_time`` for the process's CPU time).
    """
    carry = [jax.block_until_ready(step(params, state, grads))]

    def timer() -> float:
        start = clock()
        carry[0] = jax.block_until_ready(step(*carry[0][:carried], grads))
        return clock() - start

    return timer


def trace_and_compile(make: Callable[[], tuple[Any, tuple]]) -> tuple[float, float]:
    """Seconds to lower (trace) and to compile ``jitted`` for ``jitted, args = make()``.

    ``make`` must build a new jitted function each call, so that JAX's trace cache misses.
    """
    jitted, args = make()
    gc.collect()
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    traced = time.perf_counter()
    lowered.compile()
    return traced - start, time.perf_counter() - traced


def interleaved_trace_and_compile(
    makers: dict[str, Callable[[], tuple[Any, tuple]]], rounds: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Each contender's median trace and compile seconds over ``rounds`` interleaved rounds."""
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label in makers}
    order = list(makers)
    shuffler = random.Random(seed)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for label in order:
            samples[label].append(trace_and_compile(makers[label]))
    return {
        label: {
            "trace_s": statistics.median(t for t, _ in pairs),
            "compile_s": statistics.median(c for _, c in pairs),
            "total_s": statistics.median(t + c for t, c in pairs),
        }
        for label, pairs in samples.items()
    }


def hlo_summary(compiled: Any) -> dict[str, int]:
    """Fusions, copies, and bytes of the arguments and outputs of a compiled step."""
    text = compiled.as_text()
    analysis = compiled.memory_analysis()
    return {
        "fusions": len(re.findall(r"^\s*\S+ = \S+ fusion\(", text, re.M)),
        "copies": len(re.findall(r"^\s*\S+ = \S+ copy\(", text, re.M)),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
    }


def write_results(out: Any, results: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> None:
    """Writes a run's results as ``out.json`` and its table as ``out.md`` (creating the folder)."""
    import json
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(results))


def run_meta(script: str, argv: list[str] | None) -> dict[str, Any]:
    """What a results file records of its run: date, machine, versions and the command line."""
    import sys

    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__,
        "optax": optax.__version__,
        "rmsprop_jax": rmsprop_jax.__version__,
        "command": f"python3 benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
