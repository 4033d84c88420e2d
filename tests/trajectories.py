"""Recorded trajectories: the bits of every update and state after a few steps, per configuration.

``python -m tests.trajectories`` (from the repository root) writes ``tests/data/trajectories.json``;
``tests/test_trajectories.py`` recomputes each case and compares its digest. A refactor that keeps
the numerics keeps every digest; the file records the JAX version it was made with, and the test
reads the digests only under that version (XLA may round differently in another).

The bits also depend on the CPU: XLA:CPU computes ``rsqrt`` (the step's ``1 / sqrt(v + eps)``, as
optax's) from the CPU's own reciprocal-square-root estimate and a Newton step, and that estimate is
not the same on every CPU (measured: 55 of 66 cases differ between an AVX-512 Xeon and the machine
the first digests were recorded on; the 11 with ``eps`` outside the square root, which take no
``rsqrt``, agree). So the digests are kept per :func:`platform`, a fingerprint of the bits of the
operations XLA:CPU approximates. ``python -m tests.trajectories --add`` records this platform's
digests beside the others' (only from a commit whose digests pass on a recorded platform: CI's
last passing commit); without ``--add`` it replaces them all (a deliberate change of numerics,
which can only be recorded on this platform; say so in the commit).
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


UNKNOWN_PLATFORM = "unrecorded"
"""The key of digests recorded before platforms were fingerprinted (on an earlier CI machine)."""


def platform() -> str:
    """A fingerprint of this CPU's arithmetic under XLA: sha256 (12 hex digits) of the bits of the
    approximated operations a step may compile to (``rsqrt``, ``exp``, ``log``, ``x ** y``, and
    ``a * b + c``, which may contract to a fused multiply-add), jitted over fixed inputs."""
    x = jnp.asarray(np.random.default_rng(0).uniform(1e-6, 10.0, 4096), jnp.float32)
    y = jnp.asarray(np.random.default_rng(1).uniform(-3.0, 3.0, 4096), jnp.float32)

    def probe(x: jax.Array, y: jax.Array) -> tuple[jax.Array, ...]:
        return jax.lax.rsqrt(x), jnp.exp(y), jnp.log(x), x**y, x * y + 0.1

    hasher = hashlib.sha256()
    for result in jax.jit(probe)(x, y):
        hasher.update(np.asarray(result).tobytes())
    return hasher.hexdigest()[:12]


def digests_for(recorded: dict, fingerprint: str) -> dict[str, str] | None:
    """The digests recorded for the platform ``fingerprint``, else the unfingerprinted ones, if any."""
    platforms = recorded["platforms"]
    chosen = platforms.get(fingerprint, platforms.get(UNKNOWN_PLATFORM))
    return None if chosen is None else chosen["digests"]


def _cpu() -> str:
    """The CPU's model name, and whether it has AVX-512 (what the record says it was made on)."""
    import platform as host

    info = pathlib.Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), host.machine())
    return model + (", AVX-512" if any("avx512f" in line for line in lines if line.startswith("flags")) else "")


def record(previous: dict | None = None) -> dict:
    """This platform's digests, beside ``previous``'s other platforms' where given (same JAX version)."""
    platforms = {} if previous is None or previous["jax"] != jax.__version__ else dict(previous["platforms"])
    digests = {name: digest(make) for name, make in cases().items()}
    platforms[platform()] = {"cpu": _cpu(), "digests": digests}
    return {"jax": jax.__version__, "steps": STEPS, "platforms": platforms}


if __name__ == "__main__":
    import sys

    PATH.write_text(json.dumps(record(json.loads(PATH.read_text()) if "--add" in sys.argv else None), indent=1,
                               sort_keys=True) + "\n")  # fmt: skip
    print(f"wrote {PATH} (platform {platform()})")
