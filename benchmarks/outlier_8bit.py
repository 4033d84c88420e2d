"""What one huge gradient entry does to its 8-bit block's other entries, against a float32 state.

    python3 benchmarks/outlier_8bit.py     # -> benchmarks/results/outlier-8bit.json (about a minute on 2 cores)

A 64 x 64 leaf (16 x 16 tiles), N(0, 1) gradients, one entry set to ``size`` at step 100;
``rmsprop(1e-2, decay=..., state_dtype=...)`` (plain, and centered + momentum) stepped with the
same gradients in one ``jax.lax.scan`` for the 8-bit and the float32 state. Reported per
100-step window after the spike: the mean |update| of the spiked entry's 255 tile neighbours
under the 8-bit state over the same under float32 (1.0: the outlier moved nothing), and the
spiked entry's own mean |update| ratio (and its |update| against a normal one). The same for a
10-step burst, for a whole-leaf jump (every entry times ``size`` from step 100 on: a bound on the
outlier must not clip a block that grows as a whole) and for a row of 16 entries of the tile
that is always 1e4 times the rest (a genuinely large part of a block must keep its float32 steps).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rmsprop_jax

DOC = __doc__ or ""
RESULTS = Path(__file__).resolve().parent / "results" / "outlier-8bit.json"
SHAPE = (64, 64)
AT = 100  # the spike's step
WHERE = (21, 37)  # the spiked entry: tile (1, 2), row 5, column 5 of it
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "centered + momentum": {"centered": True, "momentum": 0.9},
}


def gradients(steps: int, seed: int, case: str, size: float) -> jax.Array:
    """N(0, 1) gradients, then by ``case``: ``"spike"``, ``size`` at ``WHERE`` in step ``AT``;
    ``"burst"``, the same in steps ``AT`` to ``AT + 9``; ``"jump"``, every entry times ``size`` from
    ``AT`` on; ``"row"``, the spiked entry's row of its tile (16 entries) times ``size`` in every step
    (a genuinely large part of a block, as an unnormalized input feature gives)."""
    g = jax.random.normal(jax.random.key(seed), (steps, *SHAPE), jnp.float32)
    if case == "spike":
        return g.at[AT, WHERE[0], WHERE[1]].set(size)
    if case == "burst":
        return g.at[AT : AT + 10, WHERE[0], WHERE[1]].set(size)
    if case == "jump":
        return g.at[AT:].multiply(size)
    assert case == "row", case
    column = WHERE[1] // 16 * 16
    return g.at[:, WHERE[0], column : column + 16].multiply(size)


def updates(options: dict[str, Any], state_dtype: str, grads: jax.Array) -> np.ndarray:
    """|update| of every entry at every step (the params are not used: plain RMSProp needs none)."""
    opt = rmsprop_jax.rmsprop(1e-2, state_dtype=state_dtype, **options)

    @jax.jit
    def run(grads: jax.Array) -> jax.Array:
        def step(state: Any, g: jax.Array) -> tuple[Any, jax.Array]:
            u, state = opt.update(g, state)
            return state, jnp.abs(jnp.asarray(u))

        return jax.lax.scan(step, opt.init(jnp.zeros(SHAPE)), grads)[1]

    return np.asarray(run(grads))


def windows(eight: np.ndarray, exact: np.ndarray, window: int, case: str) -> dict[str, list[float | None]]:
    """Per window after step ``AT`` (from step 0 for ``"row"``): the mean |update| of the spiked entry's
    tile neighbours (its row's for ``"row"``: the rest of the tile) and of the entry itself, each
    under the 8-bit state over the same under float32 (``None`` where float32's is 0), and the
    entry's under each state over the neighbours' under float32 (its step against a normal one)."""
    top, left = WHERE[0] // 16 * 16, WHERE[1] // 16 * 16
    neighbours = np.zeros(SHAPE, bool)
    neighbours[top : top + 16, left : left + 16] = True
    if case == "row":
        neighbours[WHERE[0], left : left + 16] = False
    neighbours[WHERE] = False
    out: dict[str, list[float | None]] = {"neighbours": [], "entry": [], "entry_8bit": [], "entry_float32": []}
    for start in range(0 if case == "row" else AT, eight.shape[0] - window + 1, window):
        part = slice(start, start + window)
        normal = exact[part][:, neighbours].mean()
        out["neighbours"].append(float(eight[part][:, neighbours].mean() / normal))
        entry, reference = eight[part][:, WHERE[0], WHERE[1]].mean(), exact[part][:, WHERE[0], WHERE[1]].mean()
        out["entry"].append(float(entry / reference) if reference > 0 else None)
        out["entry_8bit"].append(float(entry / normal))
        out["entry_float32"].append(float(reference / normal))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=DOC.splitlines()[0])
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cases = [  # (case, size, decay, steps)
        ("spike", 1e30, 0.9, 1000),
        ("spike", 1e30, 0.99, 2000),
        ("spike", 1e6, 0.99, 2000),
        ("burst", 1e30, 0.99, 1000),
        ("jump", 1e3, 0.9, 400),
        ("jump", 1e3, 0.99, 400),
        ("row", 1e4, 0.99, 400),
    ]
    rows = []
    for case, size, decay, steps in cases:
        grads = gradients(steps, 0, case, size)
        for variant, extra in VARIANTS.items():
            options = {"decay": decay, **extra}
            ratios = windows(updates(options, "8bit", grads), updates(options, "float32", grads), args.window, case)
            rows.append({"case": case, "size": size, "decay": decay, "variant": variant, "steps": steps, **ratios})
            shown = ", ".join(f"{r:.2f}" for r in ratios["neighbours"])
            entry = ", ".join("-" if r is None else f"{r:.3g}" for r in ratios["entry"][:4])
            print(f"{case} {size:g} decay {decay:<5} {variant:20s} neighbours: {shown}; entry: {entry} ...", flush=True)
    results = {
        "method": DOC.split("\n\n", 2)[2].strip(),
        "window": args.window,
        "machine": f"{platform.machine()}, {jax.devices()[0].platform}, jax {jax.__version__}",
        "rows": rows,
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
