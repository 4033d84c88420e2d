"""The state in host memory (``offload_state=True``) against device memory: step time, and bytes.

For each tree of ``benchmarks/model_trees.py`` named (default ViT-B/16, the issue's size) and each
state dtype (float32, 8-bit), RMSProp with momentum 0.9 steps with its state in device memory and
in host memory (``pinned_host``), and an A/A copy of the device-memory float32 step shows the noise.
Every step is a jitted, donated ``(params, state) -> (params, state)`` call that also applies the
updates; the contenders run interleaved (:func:`timing.interleaved`, a fresh random order each
round, median of ``--rounds``). Besides the time, each row records what the compiled step's
memory analysis reports (device and host argument bytes: XLA:CPU reports no host bytes, as its two
memories are one RAM) and the cost model's host traffic, the state's bytes read and written.

On a CPU both memory kinds are the same RAM, so the difference measures what the transfers cost in
the program (XLA:CPU copies a buffer between them or aliases it); on a GPU the same script measures
the device memory saved and the PCIe traffic's cost (run it where the device tool lends one).

    python3 benchmarks/host_state.py                      # writes results/host-state-cpu2core.{json,md}
    python3 benchmarks/host_state.py --trees ResNet-50 --out results/host-state-h100
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import optax

import rmsprop_jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model_trees
import real_models
import timing

RESULTS = Path(__file__).resolve().parent / "results" / "host-state-cpu2core"
DTYPES = {"float32": None, "8-bit": "8bit"}
CONTROL = "float32, device (A/A)"


def contenders(dtypes: Sequence[str]) -> dict[str, optax.GradientTransformation]:
    """Each state dtype in device and in host memory, and the A/A copy of float32 in device memory."""
    out = {}
    for name in dtypes:
        for place, offload in (("device", False), ("host", True)):
            out[f"{name}, {place}"] = rmsprop_jax.rmsprop(
                1e-3, momentum=0.9, state_dtype=DTYPES[name], offload_state=offload
            )
    out[CONTROL] = rmsprop_jax.rmsprop(1e-3, momentum=0.9)
    return out


def _step(tx: optax.GradientTransformation) -> Any:
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def measure(tree: dict[str, tuple[int, ...]], dtypes: Sequence[str], rounds: int) -> dict[str, Any]:
    """One tree's row: median step seconds per contender, and each compiled step's bytes."""
    txs = contenders(dtypes)
    grads = real_models.arrays(tree, seed=1, scale=1e-2)
    timers, memory = {}, {}
    for label, tx in txs.items():
        params = real_models.arrays(tree, seed=0)
        state = tx.init(params)
        step = _step(tx)
        analysis = step.lower(params, state, grads).compile().memory_analysis()
        state_bytes = real_models.state_bytes(state)
        memory[label] = {
            "state_bytes": state_bytes,
            "argument_bytes": int(analysis.argument_size_in_bytes),
            "host_argument_bytes": int(analysis.host_argument_size_in_bytes),
            "host_traffic_bytes": 2 * state_bytes if label.endswith(", host") else 0,
        }
        timers[label] = timing.donated_timer(step, params, state, grads)
        timers[label]()  # a second warm-up: the host state is committed, so the first step's outputs
        # (committed params) are a new input signature and compile once more (Scaling says so)
    samples = timing.interleaved(timers, rounds)
    seconds = {label: statistics.median(times) for label, times in samples.items()}
    return {"seconds": seconds, "samples": samples, "memory": memory}


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# RMSProp (momentum 0.9) with the state in host memory against device memory",
        "",
        f"{meta['date']}, {meta['machine']}, {meta['device']}, jax {meta['jax']}, rmsprop_jax {meta['rmsprop_jax']}; "
        f"`{meta['command']}`; donated jitted steps with `apply_updates`, interleaved, median of {meta['rounds']} "
        "rounds. Ratios are to the same state dtype in device memory; A/A is the float32 device step's copy.",
        "",
        "| tree | state | device ms | host ms | host / device | state MB | host traffic MB/step | "
        "device arg MB (device / host run) | host arg MB (host run) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        seconds, memory = row["seconds"], row["memory"]
        for name in meta["dtypes"]:
            device, host = seconds[f"{name}, device"], seconds[f"{name}, host"]
            on_device, on_host = memory[f"{name}, device"], memory[f"{name}, host"]
            lines.append(
                f"| {row['tree']} | {name} | {1e3 * device:.1f} | {1e3 * host:.1f} | {host / device:.2f}x | "
                f"{on_host['state_bytes'] / 1e6:.1f} | {on_host['host_traffic_bytes'] / 1e6:.1f} | "
                f"{on_device['argument_bytes'] / 1e6:.1f} / {on_host['argument_bytes'] / 1e6:.1f} | "
                f"{on_host['host_argument_bytes'] / 1e6:.1f} |"
            )
        control = seconds[CONTROL] / seconds["float32, device"]
        lines.append(f"| {row['tree']} | A/A (float32, device) | | | {control:.2f}x | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=["ViT-B/16"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--leaves", type=int, default=None, help="only each tree's first N leaves (tests)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    trees = model_trees.load()
    meta = {
        **timing.run_meta("host_state.py", None if argv is None else list(argv)),
        "device": jax.devices()[0].device_kind,
        "rounds": args.rounds,
        "dtypes": args.dtypes,
    }
    results: dict[str, Any] = {"meta": meta, "rows": []}
    for name in args.trees:
        row = measure(model_trees.first_leaves(trees[name], args.leaves), args.dtypes, args.rounds)
        results["rows"].append({"tree": name, **row})
        print(name, {label: round(1e3 * s, 2) for label, s in row["seconds"].items()}, flush=True)
        timing.write_results(args.out, results, markdown)
    return results


if __name__ == "__main__":
    main()
