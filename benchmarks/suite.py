"""Benchmark suite: rmsprop_jax vs optax.rmsprop vs torch.optim.RMSprop, and the memory floor.

Run ``python3 benchmarks/suite.py`` (``--quick`` for a tiny smoke run). It writes
``benchmarks/results/<host>-<date>.json``, a Markdown table (``.md``) and a plot
(``.png``), and prints the table.

Method (``benchmarks/NOTES.md``, "Method", has the reasoning):

- Step time: the jit-compiled ``tx.update`` + ``optax.apply_updates`` with params
  and state donated, one warm-up call, ``jax.block_until_ready`` on every output,
  the contenders interleaved in one process (in a fresh random order every round, so
  that no contender always runs on caches another one warmed or polluted), median and
  spread (min-max) of
  ``--repeats`` runs. Torch: ``optimizer.step()`` with the gradients set once,
  ``foreach=True`` and ``foreach=False``, on the same device kind, timed the same way
  (``torch.cuda.synchronize`` on a GPU).
- A/A control: a second, independent copy of the optax step is timed alongside; its
  ratio to the first shows how far apart two runs of the same code land, the yardstick
  for every other ratio.
- Floor: the bytes a step must move (read params, grads and state; write params
  and state, each once) divided by the bandwidth of a donated elementwise pass
  ``p + 0.5 * g`` over the same arrays (read 2, write 1), measured in the same
  case. On a GPU the device-to-device copy bandwidth is measured too.
- Compile: ``jax.jit(step).lower(...)`` (trace) and ``.compile()`` wall time of a fresh
  step, for many small leaves: each contender's median over interleaved rounds, the A/A
  control beside them (``timing.interleaved_trace_and_compile``).
- State bytes per parameter: the sum of the state arrays after ``init`` (torch:
  after one step, the ``step`` counter excluded) over the parameter count.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax

sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py beside this script
import timing

LR, DECAY, EPS = 1e-3, 0.9, 1e-8
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "momentum": {"momentum": 0.9},
    "centered+momentum": {"centered": True, "momentum": 0.9},
    "nesterov": {"momentum": 0.9, "nesterov": True},
}
CONTROL = "optax again (A/A control)"  # a second copy of optax: the noise of comparing equal code
STATE_ARRAYS = {"plain": 1, "momentum": 2, "centered+momentum": 3, "nesterov": 2}


@dataclasses.dataclass(frozen=True)
class Case:
    """One step-time measurement: a variant on ``leaves`` arrays of ``total`` parameters."""

    variant: str
    total: int
    leaves: int
    dtype: str = "float32"
    state: str = "default"  # or "8bit": rmsprop_jax's state_dtype="8bit", leaves shaped (1024, n)

    @property
    def label(self) -> str:
        label = f"{self.variant}, {self.leaves} x {self.total // self.leaves:,} {self.dtype}"
        return label if self.state == "default" else f"{label}, {self.state} state"

    def leaf_shape(self, size: int) -> tuple[int, ...]:
        """A leaf's shape from its size: 1-D, or (1024, n) for the 8-bit state's 16 x 16 tiles."""
        return (1024, size // 1024) if self.state == "8bit" else (size,)


def full_cases(gpu: bool) -> list[Case]:
    """Parameter count, leaf count, variants and dtypes, as the issue lists them."""
    m = 1_000_000
    totals = [m, 4 * m, 16 * m, 64 * m] + ([128 * m, 256 * m] if gpu else [])
    cases = [Case("plain", total, 16) for total in totals]
    cases += [Case("plain", 16 * m, leaves) for leaves in (1, 256, 4096)]
    cases += [Case(variant, 16 * m, 16) for variant in ("momentum", "centered+momentum", "nesterov")]
    cases += [Case(variant, 16 * m, 16, "bfloat16") for variant in ("plain", "centered+momentum")]
    cases += [Case(variant, 16 * 2**20, 16, state="8bit") for variant in ("plain", "centered+momentum")]
    if gpu:
        cases += [Case(variant, 256 * m, 16) for variant in ("momentum", "centered+momentum")]
    return cases


def quick_cases() -> list[Case]:
    return [
        Case("plain", 4096, 1),
        Case("centered+momentum", 4096, 4),
        Case("plain", 4096, 4, "bfloat16"),
        Case("centered+momentum", 4 * 16384, 4, state="8bit"),  # leaves (1024, 16): one column of tiles
    ]


def _leaf_sizes(case: Case) -> list[int]:
    base, extra = divmod(case.total, case.leaves)
    return [base + (i < extra) for i in range(case.leaves)]


def _jax_step(tx: optax.GradientTransformation) -> Callable:
    def step(params: list, state: Any, grads: list) -> tuple:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def jax_contenders(case: Case) -> dict[str, optax.GradientTransformation]:
    """Like with like: 16-bit params get our 16-bit state against optax's (its only option),
    and our default float32 state on its own row; the 8-bit state is timed against optax's
    float32 state (optax has no 8-bit one), with our float32 state on its own row."""
    kwargs = {"decay": DECAY, "eps": EPS, **VARIANTS[case.variant]}
    contenders = {"optax": optax.rmsprop(LR, **kwargs), CONTROL: optax.rmsprop(LR, **kwargs)}
    if case.state == "8bit":
        contenders["rmsprop_jax"] = rmsprop_jax.rmsprop(LR, state_dtype="8bit", **kwargs)
        contenders["rmsprop_jax (float32 state)"] = rmsprop_jax.rmsprop(LR, **kwargs)
    elif case.dtype == "float32":
        contenders["rmsprop_jax"] = rmsprop_jax.rmsprop(LR, **kwargs)
    else:
        contenders["rmsprop_jax"] = rmsprop_jax.rmsprop(LR, state_dtype=case.dtype, **kwargs)
        contenders["rmsprop_jax (float32 state)"] = rmsprop_jax.rmsprop(LR, **kwargs)
    return contenders


def _arrays(
    sizes: list[int], dtype: str, seed: int, shape: Callable[[int], tuple[int, ...]] = lambda n: (n,)
) -> list[jax.Array]:
    keys = jax.random.split(jax.random.key(seed), len(sizes))
    return [jax.random.normal(k, shape(n), jnp.float32).astype(dtype) for k, n in zip(keys, sizes, strict=True)]


def pass_bandwidth(sizes: list[int], dtype: str, repeats: int) -> float:
    """Bytes per second of the donated pass ``p = p + 0.5 * g`` (reads 2 arrays, writes 1)."""
    step = jax.jit(lambda ps, gs: [p + 0.5 * g for p, g in zip(ps, gs, strict=True)], donate_argnums=0)
    params, grads = _arrays(sizes, dtype, 1), _arrays(sizes, dtype, 2)
    params = jax.block_until_ready(step(params, grads))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params = jax.block_until_ready(step(params, grads))
        times.append(time.perf_counter() - start)
    return 3 * jnp.dtype(dtype).itemsize * sum(sizes) / statistics.median(times)


def copy_bandwidth(size: int, repeats: int) -> float:
    """Bytes per second (read + write) of a device-to-device copy of ``size`` float32."""
    x = jnp.ones((size,), jnp.float32)
    copy = jax.jit(lambda a: a.copy())
    jax.block_until_ready(copy(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(copy(x))
        times.append(time.perf_counter() - start)
    return 2 * 4 * size / statistics.median(times)


class TorchContender:
    """``torch.optim.RMSprop`` on the JAX backend's device kind; ``None`` where it has no such variant."""

    def __init__(self, case: Case, foreach: bool, device: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        dtype = getattr(torch, case.dtype)
        torch.manual_seed(0)
        self.params = [torch.randn(n, device=device).to(dtype) for n in _leaf_sizes(case)]
        for p in self.params:
            p.grad = torch.randn(p.shape, device=device).to(dtype)
        variant = VARIANTS[case.variant]
        self.optimizer = torch.optim.RMSprop(
            self.params,
            lr=LR,
            alpha=DECAY,
            eps=EPS,
            momentum=variant.get("momentum", 0.0),
            centered=variant.get("centered", False),
            foreach=foreach,
        )

    def step(self) -> float:
        start = time.perf_counter()
        self.optimizer.step()
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return time.perf_counter() - start

    def state_bytes(self) -> int:
        return torch_state_bytes(self.optimizer)


def torch_state_bytes(optimizer: Any) -> int:
    """The bytes of a torch optimizer's state tensors (its step counters left out)."""
    import torch

    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for k, v in state.items()
        if k != "step" and torch.is_tensor(v)
    )


def _torch_device() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if jax.default_backend() == "gpu":
        return "cuda" if torch.cuda.is_available() else None
    return "cpu"


def measure_case(case: Case, repeats: int, torch_device: str | None) -> dict[str, Any]:
    """Median step time and spread of every contender, alternated, and the floor."""
    sizes = _leaf_sizes(case)
    itemsize = jnp.dtype(case.dtype).itemsize
    bandwidth = pass_bandwidth(sizes, case.dtype, repeats)
    # Like with like: the floor of a state in the params' dtype, or in 8-bit codes plus a float32 scale per 256.
    state_itemsize = 1 + 4 / 256 if case.state == "8bit" else itemsize
    floor_bytes = case.total * (3 * itemsize + 2 * STATE_ARRAYS[case.variant] * state_itemsize)
    timers: dict[str, Callable[[], float]] = {}
    hlo: dict[str, dict[str, int]] = {}
    grads = _arrays(sizes, case.dtype, 3, case.leaf_shape)
    for label, tx in jax_contenders(case).items():
        step = _jax_step(tx)
        params = _arrays(sizes, case.dtype, 4, case.leaf_shape)
        if case.state == "8bit" and label != CONTROL:
            hlo[label] = timing.hlo_summary(step.lower(params, tx.init(params), grads).compile())
        timers[label] = timing.donated_timer(step, params, tx.init(params), grads)
    if torch_device is not None and case.variant != "nesterov":  # torch's RMSprop has no Nesterov
        for foreach in (True, False):
            run = TorchContender(case, foreach, torch_device)
            run.step()  # warm-up
            timers[f"torch foreach={foreach}"] = run.step
    times = timing.interleaved(timers, repeats)
    results = {}
    for label, samples in times.items():
        median, spread = timing.median_spread(samples)
        results[label] = {"median_ms": 1e3 * median, "spread_ms": 1e3 * spread}
    floor = floor_bytes / bandwidth
    ours, theirs = results["rmsprop_jax"]["median_ms"], results["optax"]["median_ms"]
    control = results[CONTROL]["median_ms"]
    return {
        "case": dataclasses.asdict(case),
        "label": case.label,
        "times": results,
        "floor_ms": 1e3 * floor,
        "pass_bandwidth_gbs": bandwidth / 1e9,
        "ours_over_optax": ours / theirs,
        "optax_over_optax": control / theirs,
        "ours_over_floor": ours / (1e3 * floor),
        **({"hlo": hlo} if hlo else {}),
    }


def _step_maker(tx: optax.GradientTransformation, leaves: int, leaf_size: int) -> Callable[[], tuple[Any, tuple]]:
    """A fresh jitted step and its arguments on each call (so that nothing is cached between rounds)."""

    def make() -> tuple[Any, tuple]:
        params = [jnp.full((leaf_size,), float(i)) for i in range(leaves)]
        return _jax_step(tx), (params, tx.init(params), params)

    return make


def compile_times(
    leaves_list: list[int],
    leaf_size: int,
    rounds: int = 3,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
    variants: tuple[str, ...] = ("plain", "momentum", "centered+momentum"),
) -> list[dict[str, Any]]:
    """Trace (lower) and compile wall time for many small float32 leaves: each contender's median over
    ``rounds`` interleaved rounds (a fresh step each time), with optax's A/A control beside it."""
    rows: list[dict[str, Any]] = []
    for variant in variants:
        for leaves in leaves_list:
            contenders = jax_contenders(Case(variant, leaves * leaf_size, leaves))
            makers = {label: _step_maker(tx, leaves, leaf_size) for label, tx in contenders.items()}
            row: dict[str, Any] = {"variant": variant, "leaves": leaves, "rounds": rounds}
            row |= timing.interleaved_trace_and_compile(makers, rounds)
            row["ours_over_optax"] = row["rmsprop_jax"]["total_s"] / row["optax"]["total_s"]
            row["control_over_optax"] = row[CONTROL]["total_s"] / row["optax"]["total_s"]
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def state_bytes_per_param(size: int) -> list[dict[str, Any]]:
    """Optimizer state bytes per parameter: float32 and bfloat16 params, and float32 params with
    our 8-bit state (``size`` entries: one leaf, runs of 256). Torch: on the CPU."""
    rows = []
    for dtype, state_kind in (("float32", "default"), ("bfloat16", "default"), ("float32", "8bit")):
        for variant in VARIANTS:
            row: dict[str, Any] = {"variant": variant, "dtype": dtype if state_kind == "default" else "float32, 8bit"}
            for label, tx in jax_contenders(Case(variant, size, 1, dtype, state_kind)).items():
                if label == CONTROL:
                    continue
                state = tx.init([jnp.zeros((size,), dtype)])
                row[label] = sum(x.nbytes for x in jax.tree.leaves(state) if x.size > 1) / size
            if _torch_device() is not None and variant != "nesterov" and state_kind == "default":
                run = TorchContender(Case(variant, size, 1, dtype), foreach=True, device="cpu")
                run.step()
                row["torch"] = run.state_bytes() / size
            rows.append(row)
    return rows


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    meta = report["meta"]
    lines = [
        f"# Benchmark {meta['host']} {meta['date']}",
        "",
        f"{meta['device']}; jax {meta['jax']}, optax {meta['optax']}, torch {meta['torch']}; "
        f"median of {meta['repeats']} alternated runs, spread = max - min.",
        "",
        "| case | rmsprop_jax ms (spread) | optax ms (spread) | torch foreach ms | torch for-loop ms "
        "| floor ms | ours/optax | A/A: optax/optax | ours/floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row: dict[str, Any], label: str) -> str:
        t = row["times"].get(label)
        return "n/a" if t is None else f"{t['median_ms']:.3g} ({t['spread_ms']:.2g})"

    for row in report["step_time"]:
        lines.append(
            f"| {row['label']} | {cell(row, 'rmsprop_jax')} | {cell(row, 'optax')} "
            f"| {cell(row, 'torch foreach=True')} | {cell(row, 'torch foreach=False')} "
            f"| {row['floor_ms']:.3g} | {row['ours_over_optax']:.2f} | {_ratio(row.get('optax_over_optax'))} "
            f"| {row['ours_over_floor']:.2f} |"
        )
        if "rmsprop_jax (float32 state)" in row["times"]:
            lines.append(
                f"| ... our default float32 state | {cell(row, 'rmsprop_jax (float32 state)')} | | | | | | | |"
            )
        for label, counts in row.get("hlo", {}).items():
            lines.append(
                f"| ... HLO of {label}: {counts['fusions']} fusions, {counts['copies']} copies, "
                f"{counts['argument_bytes'] / 1e6:.0f} MB in, {counts['output_bytes'] / 1e6:.0f} MB out "
                "| | | | | | | | |"
            )
    if report.get("copy_bandwidth_gbs"):
        lines += ["", f"Device-to-device copy bandwidth: {report['copy_bandwidth_gbs']:.0f} GB/s (read + write)."]
    with_control = all("control_over_optax" in row for row in report["compile"])  # older reports have none
    header = "| compile: variant, leaves | rmsprop_jax trace + compile s | optax trace + compile s | ours/optax |"
    lines += ["", header + (" A/A |" if with_control else ""), "|---|---|---|---|" + ("---|" if with_control else "")]
    for row in report["compile"]:
        ours, theirs = row["rmsprop_jax"], row["optax"]
        lines.append(
            f"| {row['variant']}, {row['leaves']} | {ours['trace_s']:.2f} + {ours['compile_s']:.2f} "
            f"| {theirs['trace_s']:.2f} + {theirs['compile_s']:.2f} | {row['ours_over_optax']:.2f} |"
            + (f" {row['control_over_optax']:.2f} |" if with_control else "")
        )
    lines += ["", "| state bytes / param: variant, dtype | rmsprop_jax | optax | torch |", "|---|---|---|---|"]
    for row in report["state_bytes"]:
        ours = f"{row['rmsprop_jax']:g}"
        if "rmsprop_jax (float32 state)" in row:
            ours += f" (default float32 state: {row['rmsprop_jax (float32 state)']:g})"
        torch_cell = f"{row['torch']:g}" if "torch" in row else "n/a"
        lines.append(f"| {row['variant']}, {row['dtype']} | {ours} | {row['optax']:g} | {torch_cell} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Step time over the floor, per case and contender (grouped bars)."""
    from matplotlib.figure import Figure

    rows = report["step_time"]
    labels = ["rmsprop_jax", "optax", "torch foreach=True", "torch foreach=False"]
    figure = Figure(figsize=(12, 5), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        xs, ys = [], []
        for j, row in enumerate(rows):
            if label in row["times"]:
                xs.append(j + (i - (len(labels) - 1) / 2) * width)
                ys.append(row["times"][label]["median_ms"] / row["floor_ms"])
        axes.bar(xs, ys, width, label=label)
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=35, ha="right", fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("step time / memory floor (1 = floor)")
    axes.set_title(f"{report['meta']['device']}: median step time relative to the memory floor")
    axes.legend()
    figure.savefig(path, dpi=120)


def run(
    cases: list[Case],
    repeats: int,
    compile_leaves: list[int],
    out_dir: Path,
    suffix: str = "",
    compile_rounds: int = 3,
) -> dict[str, Any]:
    """Runs everything and writes ``<host>-<date>.json``, ``.md`` and ``.png`` into ``out_dir``."""
    torch_device = _torch_device()
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    device = jax.devices()[0]
    meta = {
        "host": socket.gethostname(),
        "date": datetime.date.today().isoformat(),
        "device": f"{device.device_kind} ({jax.default_backend()}, {os.cpu_count()} CPU cores)",
        "platform": platform.platform(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "torch": torch_version,
        "rmsprop_jax": rmsprop_jax.__version__,
        "repeats": repeats,
    }
    report: dict[str, Any] = {"meta": meta, "step_time": [], "compile": [], "state_bytes": []}
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{meta['host']}-{meta['date']}{suffix}"

    def write() -> None:  # after every part, so that an interrupted run keeps what it measured
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(report))

    start = time.perf_counter()
    for case in cases:
        report["step_time"].append(measure_case(case, repeats, torch_device))
        write()
        print(f"[{time.perf_counter() - start:6.1f} s] measured {case.label}", flush=True)
    if jax.default_backend() == "gpu":
        report["copy_bandwidth_gbs"] = copy_bandwidth(256 * 1_000_000, repeats) / 1e9
    report["state_bytes"] = state_bytes_per_param(4096)
    write()

    def compiled(rows: list[dict[str, Any]]) -> None:
        report["compile"] = rows
        write()
        print(f"[{time.perf_counter() - start:6.1f} s] compiled {rows[-1]['variant']}, {rows[-1]['leaves']} leaves")

    compile_times(compile_leaves, leaf_size=1024, rounds=compile_rounds, on_row=compiled)
    print(f"[{time.perf_counter() - start:6.1f} s] compile times done", flush=True)
    plot(report, stem.with_suffix(".png"))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 3 repeats: a smoke run")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per contender (default 15)")
    parser.add_argument(
        "--compile-leaves", type=int, nargs="+", default=[256, 1024, 4096], help="leaf counts to compile"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument(
        "--only", default=None, help="measure only the step-time cases whose label contains this text (e.g. 8bit)"
    )
    parser.add_argument("--suffix", default="", help="appended to the result files' names")
    parser.add_argument("--compile-rounds", type=int, default=3, help="interleaved rounds of trace + compile")
    args = parser.parse_args()
    gpu = jax.default_backend() == "gpu"
    if args.quick:
        report = run(quick_cases(), 3, [2, 4], args.out, args.suffix)
    else:
        cases = [case for case in full_cases(gpu) if args.only is None or args.only in case.label]
        report = run(cases, args.repeats, args.compile_leaves, args.out, args.suffix, args.compile_rounds)
    print(markdown(report))


if __name__ == "__main__":
    main()
