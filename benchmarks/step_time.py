"""Step time of rmsprop_jax vs optax.rmsprop, and the memory-bandwidth floor.

Method (see benchmarks/NOTES.md): the jit-compiled update + apply with params and state
donated; warm-up first; `jax.block_until_ready` on every output; the two optimizers
alternate in one process; median and spread (min-max) over `--repeats` runs. The floor
is the bytes a step must move (read p, g and the state, write p and the state) divided
by the bandwidth of a donated elementwise pass over the same arrays, measured here.

Usage: python3 benchmarks/step_time.py [--leaves 16] [--leaf-size 1000000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import optax

import rmsprop_jax

VARIANTS = {"plain": {}, "momentum": {"momentum": 0.9}, "centered+momentum": {"centered": True, "momentum": 0.9}}


def make_step(tx: optax.GradientTransformation) -> Callable:
    def step(params: list, state: object, grads: list) -> tuple:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def time_once(step: Callable, carry: tuple, grads: list) -> tuple[float, tuple]:
    start = time.perf_counter()
    carry = jax.block_until_ready(step(*carry, grads))
    return time.perf_counter() - start, carry


def copy_bandwidth(leaves: int, size: int, repeats: int) -> float:
    """Bytes per second of a donated pass `p = p + 0.5 * g` (reads 2 arrays, writes 1)."""
    step = jax.jit(lambda ps, gs: [p + 0.5 * g for p, g in zip(ps, gs, strict=True)], donate_argnums=0)
    keys = jax.random.split(jax.random.key(1), leaves)
    params = [jax.random.normal(k, (size,)) for k in keys]
    grads = [jax.random.normal(k, (size,)) for k in jax.random.split(jax.random.key(2), leaves)]
    params = jax.block_until_ready(step(params, grads))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        params = jax.block_until_ready(step(params, grads))
        times.append(time.perf_counter() - start)
    return 3 * 4 * leaves * size / statistics.median(times)


def run(leaves: int, size: int, repeats: int) -> list[dict]:
    bandwidth = copy_bandwidth(leaves, size, repeats)
    rows = []
    for name, kwargs in VARIANTS.items():
        contenders = {"rmsprop_jax": rmsprop_jax.rmsprop(1e-3, **kwargs), "optax": optax.rmsprop(1e-3, **kwargs)}
        state_arrays = 1 + ("centered" in kwargs) + ("momentum" in kwargs)
        floor = (3 + 2 * state_arrays) * 4 * leaves * size / bandwidth  # read p, g, state; write p, state
        carries, steps, times = {}, {}, {k: [] for k in contenders}
        grads = [jax.random.normal(k, (size,)) for k in jax.random.split(jax.random.key(3), leaves)]
        for label, tx in contenders.items():
            params = [jax.random.normal(k, (size,)) for k in jax.random.split(jax.random.key(4), leaves)]
            steps[label] = make_step(tx)
            carries[label] = jax.block_until_ready(steps[label](params, tx.init(params), grads))  # warm-up
        for _ in range(repeats):
            for label in contenders:  # A/B alternated
                elapsed, carries[label] = time_once(steps[label], carries[label], grads)
                times[label].append(elapsed)
        ours, theirs = statistics.median(times["rmsprop_jax"]), statistics.median(times["optax"])
        rows.append(
            {
                "variant": name,
                "ours_ms": 1e3 * ours,
                "ours_spread_ms": 1e3 * (max(times["rmsprop_jax"]) - min(times["rmsprop_jax"])),
                "optax_ms": 1e3 * theirs,
                "optax_spread_ms": 1e3 * (max(times["optax"]) - min(times["optax"])),
                "floor_ms": 1e3 * floor,
                "ours_over_optax": ours / theirs,
                "ours_over_floor": ours / floor,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=16)
    parser.add_argument("--leaf-size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"{args.leaves} leaves x {args.leaf_size} float32, median of {args.repeats}, {jax.devices()[0]}")
    print("| variant | rmsprop_jax ms (spread) | optax ms (spread) | floor ms | ours/optax | ours/floor |")
    print("|---|---|---|---|---|---|")
    for r in run(args.leaves, args.leaf_size, args.repeats):
        print(
            f"| {r['variant']} | {r['ours_ms']:.1f} ({r['ours_spread_ms']:.1f}) | {r['optax_ms']:.1f} "
            f"({r['optax_spread_ms']:.1f}) | {r['floor_ms']:.1f} | {r['ours_over_optax']:.2f} | "
            f"{r['ours_over_floor']:.2f} |"
        )


if __name__ == "__main__":
    main()
