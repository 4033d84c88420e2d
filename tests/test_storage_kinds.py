"""The storage kinds' registry (:mod:`rmsprop_jax._storage_kinds`): every kind through one door.

A kind is its own module behind the protocol of :mod:`rmsprop_jax._storage_protocol`; nothing but
the kinds' modules and the registry names one. The last test plugs a new kind in by adding it to
the registry alone, and trains with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ROOT, names_used

import rmsprop_jax
from rmsprop_jax import _storage_kinds as kinds
from rmsprop_jax._storage_float import FLOAT, FloatKind, FloatStorage
from rmsprop_jax._storage_protocol import Bounds, Scalar, Storage, Stored

KIND_MODULES = {"_storage_float", "_storage_8bit", "_codec_8bit", "_storage_4bit", "_codec_4bit", "_storage_kinds"}
F16 = np.dtype(np.float16)
KIND_NAMES = {"Quantized", "BlockStorage", "FloatStorage", "EIGHT_BIT", "EIGHT_BIT_KIND", "FLOAT"} | {
    "Nibbles", "NibbleStorage", "FOUR_BIT", "FOUR_BIT_KIND"
}  # fmt: skip


def test_no_module_but_the_kinds_and_the_registry_names_a_storage_kind():
    """Every other module asks the registry; ``__init__`` re-exports the public ``Quantized`` type."""
    package = ROOT / "rmsprop_jax"
    offenders = {}
    for path in [*package.glob("*.py"), *package.glob("presets/*.py")]:
        if path.stem in KIND_MODULES:
            continue
        used = names_used(path) & ((KIND_MODULES - {"_storage_kinds"}) | KIND_NAMES)
        if path.stem == "__init__":
            used -= {"_codec_8bit", "Quantized", "_codec_4bit", "Nibbles"}
        if used:
            offenders[str(path.relative_to(ROOT))] = sorted(used)
    assert offenders == {}


def test_each_value_resolves_to_its_kind_and_a_stored_array_reads_back_as_its_storage():
    param = jnp.zeros((64, 256))
    for value, rounds in ((None, False), ("float32", False), ("bfloat16", True), ("8bit", True), ("4bit", True)):
        resolved = kinds.resolve("state_dtype", value)
        assert kinds.rounds(resolved) is rounds
        for signed in (False, True):
            storage = kinds.for_param(param, resolved, signed)
            assert kinds.read(storage.filled(param, 0.5), signed) == storage
    with pytest.raises(ValueError, match="must be one of float16, bfloat16, float32, float64, '8bit', '4bit'"):
        kinds.resolve("state_dtype", "2bit")


@dataclasses.dataclass(frozen=True)
class _NearestHalf:
    """A toy kind's storage: float16 rounded to nearest (no step count, no stochastic rounding)."""

    dtype: Any = F16
    name: str = "toy float16"
    packable: bool = False
    keeps_centered_variance: bool = False
    rounds: bool = False

    def filled(self, param: jax.Array, fill: Scalar) -> Stored:
        return FloatStorage(self.dtype).filled(param, fill)

    def filled_on_host(self, param: jax.Array, fill: Scalar) -> list[tuple[Any, tuple[int, ...]]]:
        return FloatStorage(self.dtype).filled_on_host(param, fill)

    def assembled(self, arrays: list[jax.Array]) -> Stored:
        return arrays[0]

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array:
        return stored.astype(compute)

    def store(self, value: jax.Array, seed: jax.Array | None) -> Stored:
        return value.astype(self.dtype)

    def keep(self, value: jax.Array, seed: jax.Array | None, bounds: Bounds | None = None) -> tuple[Stored, jax.Array]:
        stored = self.store(value, seed)
        return stored, stored.astype(value.dtype)


class _ToyKind(FloatKind):
    """The float kind's plumbing (one array per stored array), its own values and storage."""

    spellings: tuple[str, ...] = ("'toy'",)

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value == "toy"

    def resolve(self, argument: str, value: Any) -> str:
        return "toy"

    def owns(self, resolved: Any) -> bool:
        return resolved == "toy"

    def rounds(self, resolved: Any) -> bool:
        return False

    def for_param(self, param: jax.Array, resolved: Any, signed: bool) -> Storage:
        return _NearestHalf()

    def read(self, stored: Stored, signed: bool) -> Storage | None:
        return _NearestHalf() if getattr(stored, "dtype", None) == jnp.float16 else None

    def disagreement(self, storage: Storage, wanted: Any, path: str, chosen: str) -> str | None:
        return None


def test_a_new_kind_plugs_in_through_the_registry_alone_and_trains(monkeypatch):
    """A kind the package has never seen, added to ``KINDS`` only: the factories accept its value, a
    per-leaf policy mixes it with 8 bits, ``init``, ``update`` under ``jax.jit`` and the report work."""
    monkeypatch.setattr(kinds, "KINDS", (FLOAT, _ToyKind(), *kinds.KINDS[1:]))
    params = {"w": jnp.linspace(-1.0, 1.0, 64 * 256).reshape(64, 256), "v": jnp.ones((64, 256))}
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype={"w": "toy", "v": "8bit"})
    state = tx.init(params)
    assert state.nu["w"].dtype == jnp.float16 and state.trace["w"].dtype == jnp.float16

    @jax.jit
    def step(params: dict, state: object) -> tuple[dict, object]:
        grads = jax.tree.map(lambda p: 2 * p, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(20):
        params, state = step(params, state)
    assert float(jnp.sum(params["w"] ** 2)) < float(jnp.sum(jnp.linspace(-1.0, 1.0, 64 * 256) ** 2))
    assert np.all(np.isfinite(np.asarray(params["w"])))
    storages = {leaf.path: leaf.storage for leaf in rmsprop_jax.state_report(state).leaves}
    assert storages["['w']"] == "toy float16" and storages["['v']"].startswith("8bit")
