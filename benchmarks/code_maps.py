"""Which 8-bit code map should hold RMSProp's square average? A measurement for issue 12.

    python3 benchmarks/code_maps.py            # -> benchmarks/results/code_maps-<host>.json and .md

Each candidate map is a sorted table of 256 representable values in ``[0, 1]`` (a block of
256 entries is divided by its largest entry, which every map holds exactly). Accuracy
depends only on that table, so every map is simulated the same way: the exponential
moving average ``nu`` of ``g^2`` over ``steps`` steps, kept as codes with stochastic
(or nearest) rounding after each step, against the float32 average. Each entry's gradient
has a fixed scale drawn log-uniformly over ``decades`` decades inside its block, so ``nu``
spans twice as many. Reported: the error of what the step uses, ``1 / sqrt(nu)``, relative
to float32, at the median and the 99th percentile over all entries and over the entries
more than 1e4 below their block's largest ``nu``, and the share of entries whose code is 0.

Speed of the two ways to encode (a table search against integer bit operations) is
measured separately, on a float32 array, as a jitted elementwise pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 256


def dynamic_map(signed: bool, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """bitsandbytes' dynamic (tree) map, rebuilt from its description (Dettmers 2015, 2022): each
    decade from 1e-6 to 1 gets a linear grid whose size doubles per decade; signed maps spend
    half the codes on negatives. Returns the non-negative values, sorted, with 0 and 1."""
    values = [0.0, 1.0]
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        items = (
            2 ** (i + non_sign_bits - max_exponent_bits) + 1
            if signed
            else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        )
        boundaries = np.linspace(0.1, 1.0, int(items))
        means = (boundaries[:-1] + boundaries[1:]) / 2
        values += list(10.0 ** (-(max_exponent_bits - 1) + i) * means)
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    if extra > 0:
        boundaries = np.linspace(0.1, 1.0, extra + 1)
        values += list(
            10.0 ** (-(max_exponent_bits - 1) + max_exponent_bits - 1) * (boundaries[:-1] + boundaries[1:]) / 2
        )
    return np.unique(np.asarray(values, np.float64))


def float_map(exponent_bits: int, mantissa_bits: int) -> np.ndarray:
    """An unsigned float with subnormals, ``exponent_bits + mantissa_bits == 8``, scaled so its largest value is 1."""
    values = []
    for code in range(256):
        exponent, mantissa = code >> mantissa_bits, code & ((1 << mantissa_bits) - 1)
        fraction = mantissa / (1 << mantissa_bits)
        values.append(fraction * 2.0**1 if exponent == 0 else (1 + fraction) * 2.0**exponent)
    table = np.asarray(values, np.float64) * 2.0 ** -(2**exponent_bits)
    return np.unique(table / table.max())


ROOT_MAP = "float E4M4 of sqrt(nu)"  # codes hold the root: half the decades of nu per code range


def _stored(new: jax.Array, table: jax.Array, key: jax.Array, stochastic: bool, root: bool) -> jax.Array:
    """``new`` (one row per block) as the codes keep it: scaled by the block's max, rounded, scaled back."""
    absmax = jnp.maximum(jnp.max(new, axis=1, keepdims=True), 1e-38)
    if root:
        return _round(jnp.sqrt(new / absmax), table, key, stochastic) ** 2 * absmax
    return _round(new / absmax, table, key, stochastic) * absmax


def maps() -> dict[str, np.ndarray]:
    return {
        "linear": np.linspace(0.0, 1.0, 256),
        "dynamic signed (bitsandbytes RMSprop8bit)": dynamic_map(signed=True),
        "dynamic unsigned": dynamic_map(signed=False),
        "float E3M5": float_map(3, 5),
        "float E4M4": float_map(4, 4),
        "float E5M3": float_map(5, 3),
        ROOT_MAP: float_map(4, 4),
    }


def _round(x: jax.Array, table: jax.Array, key: jax.Array, stochastic: bool) -> jax.Array:
    """``x`` in ``[0, 1]`` to a value of ``table``: the neighbour above with probability
    ``(x - low) / (high - low)`` (stochastic), or the nearer neighbour."""
    above = jnp.clip(jnp.searchsorted(table, x, side="right"), 1, table.size - 1)
    low, high = table[above - 1], table[above]
    position = (x - low) / (high - low)
    threshold = jax.random.uniform(key, x.shape) if stochastic else 0.5
    return jnp.where(position > threshold, high, low)


def simulate(
    table: np.ndarray,
    *,
    decades: float,
    decay: float,
    steps: int,
    blocks: int,
    stochastic: bool,
    drop_at: int | None = None,
    seed: int = 0,
    root: bool = False,
) -> dict[str, float]:
    """The 8-bit average against float32's after ``steps`` steps (see the module docstring).

    With ``drop_at``, every entry's gradient but the first of each block (which keeps the
    block's maximum in place) falls tenfold from that step on: the case where rounding to
    nearest freezes an average at a high decay.
    """
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-decades, 0.0, (blocks, BLOCK))
    scale[:, 0] = 1.0
    codes_table = jnp.asarray(table, jnp.float32)
    dropped = jnp.asarray(np.where(np.arange(BLOCK) == 0, 1.0, 0.1) * scale, jnp.float32)

    def step(carry: tuple, inputs: tuple) -> tuple:
        exact, stored = carry
        key, t = inputs
        noise_key, round_key = jax.random.split(key)
        current = jnp.where(t >= (steps if drop_at is None else drop_at), dropped, jnp.asarray(scale, jnp.float32))
        g = current * jax.random.normal(noise_key, scale.shape)
        exact = decay * exact + (1 - decay) * g * g
        new = decay * stored + (1 - decay) * g * g
        quantized = _stored(new, codes_table, round_key, stochastic, root)
        return (exact, quantized), None

    start = jnp.asarray(scale**2, jnp.float32)  # start at the expected value: no warm-up transient
    inputs = (jax.random.split(jax.random.key(seed), steps), jnp.arange(steps))
    (exact, stored), _ = jax.lax.scan(step, (start, start), inputs)
    exact, stored = np.asarray(exact, np.float64), np.asarray(stored, np.float64)
    error = np.abs(np.sqrt(exact / np.maximum(stored, 1e-300)) - 1.0)
    error[stored == 0] = 1e9  # a zero code: no finite step size (the update bound takes over)
    far = exact < exact.max(axis=1, keepdims=True) * 1e-4
    return {
        "median_error": float(np.median(error)),
        "p99_error": float(np.quantile(error, 0.99)),
        "far_median_error": float(np.median(error[far])) if far.any() else float("nan"),
        "far_p99_error": float(np.quantile(error[far], 0.99)) if far.any() else float("nan"),
        "far_share": float(far.mean()),
        "zero_codes": float((stored == 0).mean()),
    }


def drop_ratio(table: np.ndarray, *, stochastic: bool, blocks: int, root: bool = False) -> float:
    """Mean stored nu over float32 nu, over the entries whose gradient fell, after 3000 steps at decay 0.999."""
    codes_table = jnp.asarray(table, jnp.float32)
    rng = np.random.default_rng(1)
    scale = np.full((blocks, BLOCK), 0.1)
    scale[:, 0] = 1.0
    after = np.where(np.arange(BLOCK) == 0, 1.0, 0.01)[None, :] * np.ones_like(scale)
    del rng

    def step(carry: tuple, inputs: tuple) -> tuple:
        exact, stored = carry
        key, t = inputs
        noise_key, round_key = jax.random.split(key)
        g = jnp.where(t >= 1000, jnp.asarray(after, jnp.float32), jnp.asarray(scale, jnp.float32))
        g = g * (1 + 0.1 * jax.random.normal(noise_key, g.shape))
        exact = 0.999 * exact + 0.001 * g * g
        new = 0.999 * stored + 0.001 * g * g
        quantized = _stored(new, codes_table, round_key, stochastic, root)
        return (exact, quantized), None

    start = jnp.asarray(scale**2, jnp.float32)
    inputs = (jax.random.split(jax.random.key(2), 3000), jnp.arange(3000))
    (exact, stored), _ = jax.lax.scan(step, (start, start), inputs)
    exact, stored = np.asarray(exact)[:, 1:], np.asarray(stored)[:, 1:]
    return float(np.mean(stored / exact))


def _time(fn: Callable[[jax.Array], jax.Array], x: jax.Array, repeats: int) -> float:
    fn(x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def encode_speed(size: int, repeats: int) -> dict[str, float]:
    """Milliseconds to encode ``size`` float32 values in ``[0, 1]`` to uint8, median of ``repeats``:
    a table search (any map), integer bit operations (float E4M4, stochastic), and a copy."""
    table = jnp.asarray(float_map(4, 4), jnp.float32)
    x = jax.random.uniform(jax.random.key(1), (size,), jnp.float32)

    @jax.jit
    def by_table(x: jax.Array) -> jax.Array:
        return jnp.searchsorted(table, x).astype(jnp.uint8)

    @jax.jit
    def by_bits(x: jax.Array) -> jax.Array:
        # E4M4 (exponents 2^-15 .. 2^0, no subnormals here): add random bits below the kept
        # mantissa, truncate, rebase the exponent; a counter hash stands in for the random bits.
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
        index = jax.lax.iota(jnp.uint32, x.size)
        noise = (index * jnp.uint32(0x9E3779B9)) >> 13
        raised = (bits + (noise & jnp.uint32((1 << 19) - 1))) >> 19
        return jnp.clip(raised.astype(jnp.int32) - (112 << 4), 0, 255).astype(jnp.uint8)

    @jax.jit
    def copy(x: jax.Array) -> jax.Array:
        return x * 1.0

    return {
        "table search (searchsorted)": _time(by_table, x, repeats),
        "bit operations (E4M4)": _time(by_bits, x, repeats),
        "float32 elementwise pass": _time(copy, x, repeats),
    }


def markdown(report: dict) -> str:
    drop = report["drop"]
    lines = [
        f"Simulated: {report['blocks']} blocks of {BLOCK}, {report['steps']} steps, decay {report['decay']}; "
        "error of 1/sqrt(nu) against float32 (median / 99th percentile); "
        "'far': entries below 1e-4 of their block's max.",
        "",
        "| map | rounding | g decades | median | p99 | far median | far p99 | far share | zero codes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["accuracy"]:
        r = row["result"]
        lines.append(
            f"| {row['map']} | {row['rounding']} | {row['decades']} | {r['median_error']:.2e} | {r['p99_error']:.2e} | "
            f"{r['far_median_error']:.2e} | {r['far_p99_error']:.2e} | {r['far_share']:.2f} | {r['zero_codes']:.3f} |"
        )
    lines += [
        "",
        f"Gradient drop: {drop['blocks']} blocks, decay {drop['decay']}, {drop['steps']} steps, every gradient but "
        f"each block's first falls 10x at step {drop['drop_at']}; mean nu / float32 nu over the dropped entries:",
        "",
    ]
    lines += [f"- {row['map']}, {row['rounding']}: {row['ratio']:.3f}" for row in drop["rows"]]
    lines += ["", f"Encode {report['encode_size']:,} float32 values (ms, median of {report['repeats']}):", ""]
    lines += [f"- {name}: {ms:.2f}" for name, ms in report["encode_ms"].items()]
    return "\n".join(lines) + "\n"


def run(*, steps: int, blocks: int, decay: float, decades: Sequence[float], encode_size: int, repeats: int) -> dict:
    accuracy = []
    for name, table in maps().items():
        for spread in decades:
            for stochastic in (True, False):
                if not stochastic and name != "float E4M4":
                    continue  # nearest rounding: one map shows the stall
                result = simulate(
                    table,
                    decades=spread,
                    decay=decay,
                    steps=steps,
                    blocks=blocks,
                    stochastic=stochastic,
                    root=name == ROOT_MAP,
                )
                accuracy.append(
                    {
                        "map": name,
                        "rounding": "stochastic" if stochastic else "nearest",
                        "decades": spread,
                        "result": result,
                    }
                )
    drop_rows = []
    for name in ("dynamic unsigned", "float E4M4", "float E5M3", ROOT_MAP):
        for stochastic in (True, False):
            ratio = drop_ratio(maps()[name], stochastic=stochastic, blocks=blocks, root=name == ROOT_MAP)
            drop_rows.append({"map": name, "rounding": "stochastic" if stochastic else "nearest", "ratio": ratio})
    return {
        "drop": {"blocks": blocks, "decay": 0.999, "steps": 3000, "drop_at": 1000, "rows": drop_rows},
        "host": platform.node(),
        "jax": jax.__version__,
        "steps": steps,
        "blocks": blocks,
        "decay": decay,
        "codes": {name: int(table.size) for name, table in maps().items()},
        "accuracy": accuracy,
        "encode_size": encode_size,
        "repeats": repeats,
        "encode_ms": encode_speed(encode_size, repeats),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--decay", type=float, default=0.99)
    parser.add_argument("--decades", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--encode-size", type=int, default=16 * 2**20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS / "code_maps-cpu2core.json")
    args = parser.parse_args(argv)
    report = run(
        steps=args.steps,
        blocks=args.blocks,
        decay=args.decay,
        decades=args.decades,
        encode_size=args.encode_size,
        repeats=args.repeats,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
