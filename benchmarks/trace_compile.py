"""Trace and compile time of a jitted step, rmsprop_jax against optax.rmsprop, with the A/A control.

    python3 benchmarks/trace_compile.py        # -> benchmarks/results/trace-compile-cpu2core.{json,md}

For plain, momentum and centered + momentum RMSProp over 256, 1024 and 4096 float32 leaves of
1024 entries: ``jax.jit(step).lower(...)`` (the trace) and ``.compile()`` of a fresh step
(update + ``optax.apply_updates``, params and state donated), for rmsprop_jax, optax and a
second copy of optax (the A/A control), interleaved in a fresh random order every round; the
median of ``--rounds`` rounds (``suite.compile_times``, ``timing.interleaved_trace_and_compile``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the suite beside this script
import suite
import timing

RESULTS = Path(__file__).resolve().parent / "results" / "trace-compile-cpu2core"


def markdown(results: dict[str, Any]) -> str:
    """The Speed page's table: each contender's trace + compile seconds, and the ratios to optax."""
    lines = [
        "| variant | leaves | rmsprop_jax trace + compile s | optax trace + compile s | ours / optax "
        "| trace / optax's | compile / optax's | A/A |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        ours, theirs = row["rmsprop_jax"], row["optax"]
        lines.append(
            f"| {row['variant']} | {row['leaves']} | {ours['trace_s']:.2f} + {ours['compile_s']:.2f} "
            f"| {theirs['trace_s']:.2f} + {theirs['compile_s']:.2f} | {row['ours_over_optax']:.2f} "
            f"| {ours['trace_s'] / theirs['trace_s']:.2f} | {ours['compile_s'] / theirs['compile_s']:.2f} "
            f"| {row['control_over_optax']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--leaf-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", nargs="+", default=["plain", "momentum", "centered+momentum"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    meta = {
        **timing.run_meta("trace_compile.py", None if argv is None else list(argv)),
        "leaf_size": args.leaf_size,
        "rounds": args.rounds,
    }
    results = {"meta": meta, "rows": []}

    def write(rows: list[dict[str, Any]]) -> None:
        results["rows"] = rows
        timing.write_results(args.out, results, markdown)
        print(markdown({"rows": rows[-1:]}).splitlines()[-1], flush=True)

    suite.compile_times(args.leaves, args.leaf_size, args.rounds, on_row=write, variants=tuple(args.variants))
    return results


if __name__ == "__main__":
    main()
