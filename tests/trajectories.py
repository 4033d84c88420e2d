"""Recorded trajectories: the bits of every update and state after a few steps, per configuration.

``python -m tests.trajectories`` (from the repository root) writes ``tests/data/trajectories.json``;
``tests/test_trajectories.py`` recomputes each case and compares its digest. A refactor that keeps
the numerics keeps every digest; the file records the JAX version it was made with, and the test
reads the digests only under that version (XLA may round differently in another).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rmsprop_jax
from rmsprop_jax import presets

PATH = pathlib.Path(__file__).parent / "data" / "trajectories.json"
STEPS = 4


def params_tree() -> dict[str, jax.Array]:
    """8-bit tiles (w), runs (r), float leaves too small or of no block shape, and packable biases."""
    rng = np.random.default_rng(0)
    shapes = {"w": (64, 64), "r": (8, 512), "k": (3, 3, 8, 16), "b1": (16,), "b2": (16,), "b3": (16,), "odd": (33, 7)}
    return {name: jnp.asarray(rng.standard_normal(shape), jnp.float32) for name, shape in shapes.items()}


def _variants() -> dict[str, dict]:
    return {
        "plain": {},
        "momentum": {"momentum": 0.9},
        "centered": {"centered": True},
        "centered_momentum": {"centered": True, "momentum": 0.9},
        "nesterov_decoupled": {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2, "decoupled_weight_decay": True},
        "caution_coupled": {"momentum": 0.5, "caution": True, "weight_decay": 1e-2, "lr_in_momentum": False},
        "bias_eps_out": {"bias_correction": True, "eps_in_sqrt": False, "eps": 1e-3, "momentum": 0.9},
    }


def cases() -> dict[str, Callable[[], optax.GradientTransformation]]:
    """Every case's optimizer factory, by name."""
    out: dict[str, Callable[[], optax.GradientTransformation]] = {}
    schedule = optax.linear_schedule(0.01, 0.001, 10)
    for storage in (None, "bfloat16", "float16", "8bit"):
        for pack in (False, True):
            for name, options in _variants().items():
                if storage == "8bit" and options.get("bias_correction") and options.get("centered"):
                    continue
                key = f"{storage or 'default'}/{'packed' if pack else 'per_leaf'}/{name}"
                out[key] = lambda o=options, s=storage, p=pack: rmsprop_jax.rmsprop(
                    schedule, decay=0.9, state_dtype=s, pack_small_leaves=p, **o
                )
    mask = {"w": True, "r": True, "k": True, "b1": False, "b2": False, "b3": True, "odd": False}
    out["masked/packed"] = lambda: rmsprop_jax.rmsprop(
        0.01, momentum=0.9, weight_decay=0.1, weight_decay_mask=mask, pack_small_leaves=True
    )
    out["scale_by_rms/centered"] = lambda: rmsprop_jax.scale_by_rms(centered=True, pack_small_leaves=True)
    out["presets/pytorch"] = lambda: presets.pytorch(lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3)
    out["presets/keras"] = lambda: presets.keras(learning_rate=0.01, momentum=0.9, weight_decay=1e-3)
    out["presets/tensorflow_v1"] = lambda: presets.tensorflow_v1(0.01, momentum=0.9, centered=True)
    out["presets/timm"] = lambda: presets.timm(lr=0.01, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=1e-5)
    out["presets/timm_8bit_packed"] = lambda: presets.timm(
        lr=0.01, momentum=0.9, weight_decay=1e-5, state_dtype="8bit", pack_small_leaves=True
    )
    out["presets/dqn2015"] = lambda: presets.dqn2015(2.5e-4)
    out["presets/graves2013"] = lambda: presets.graves2013(1e-3)
    out["presets/hinton2012"] = lambda: presets.hinton2012(1e-3)
    return out


def _gradients(params: dict[str, jax.Array], step: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(100 + step)
    scale = 10.0 ** (step % 3 - 1)
    return {k: jnp.asarray(scale * rng.standard_normal(v.shape) + 0.3, jnp.float32) for k, v in params.items()}


def _array_digest(leaf: jax.Array) -> bytes:
    array = np.asarray(leaf)
    return hashlib.sha256(str((array.dtype, array.shape)).encode() + array.tobytes()).digest()


def digest(make: Callable[[], optax.GradientTransformation]) -> str:
    """sha256 of every update (in the params' leaf order) and every state array over :data:`STEPS`
    jitted steps. The state's arrays are hashed as a set, sorted by their own digests: the order in
    which a layout lists its arrays (packed groups, per-leaf leaves) is not numerics, and the values
    recorded before the state became arrays only (``PackedGroups``) hash the same."""
    tx = make()
    params = params_tree()
    state = tx.init(params)
    step = jax.jit(tx.update)
    hasher = hashlib.sha256()
    for t in range(STEPS):
        updates, state = step(_gradients(params, t), state, params)
        params = optax.apply_updates(params, updates)
        for leaf in jax.tree.leaves(updates):
            hasher.update(_array_digest(leaf))
        for leaf_digest in sorted(_array_digest(leaf) for leaf in jax.tree.leaves(state)):
            hasher.update(leaf_digest)
    return hasher.hexdigest()


def record() -> dict:
    return {"jax": jax.__version__, "steps": STEPS, "digests": {name: digest(make) for name, make in cases().items()}}


if __name__ == "__main__":
    PATH.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PATH}")
