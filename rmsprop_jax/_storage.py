"""A leaf's storages, a state field allocated in them, and what a stored array weighs.

How one state array is kept is a *storage* (:class:`rmsprop_jax._storage_protocol.Storage`),
of one of the kinds registered in :mod:`rmsprop_jax._storage_kinds` (float dtypes, 8-bit codes
with block scales); this module holds what every kind shares: :func:`filled`, which allocates
the arrays of many leaves at once without compiling per shape, and :func:`nbytes`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import core

from rmsprop_jax._placement import host_placement
from rmsprop_jax._storage_protocol import LeafStorages, Scalar, Storage, Stored

__all__ = ["LeafStorages", "Scalar", "Storage", "Stored", "filled", "nbytes"]


@functools.partial(jax.jit, static_argnums=0)
def _filled_together(storages: tuple[Storage, ...], params: list[jax.Array], fill: Scalar) -> list[Stored]:
    return [kept.filled(param, fill) for kept, param in zip(storages, params, strict=True)]


def filled(storages: Sequence[Storage], params: Sequence[jax.Array], fill: Scalar) -> list[Stored]:
    """Each param's state array in its storage, holding ``fill`` everywhere and placed as the param is.

    Run op by op, an eager ``init`` compiles each of its operations for every shape of the tree
    (about 70 ms apiece on XLA:CPU): EfficientNet-B0's 8-bit state took 101 s, its float32 state
    26 s in a fresh process (``benchmarks/NOTES.md``, "The state's init"). So a concrete param on one device, or
    replicated, gets its state from one value per array computed once and broadcast (:func:`_constant`);
    concrete sharded params are
    filled by one compiled program per set of devices they live on (cached for the same tree);
    traced params (``init`` under ``jax.jit``) in the caller's trace.
    """
    if any(isinstance(param, core.Tracer) for param in params):
        return [kept.filled(param, fill) for kept, param in zip(storages, params, strict=True)]
    params = [
        param if isinstance(param, jax.Array) else jnp.asarray(param) for param in params
    ]  # NumPy, Python numbers
    out: list[Any] = [None] * len(params)
    by_devices: dict[Any, list[int]] = {}
    for index, (kept, param) in enumerate(zip(storages, params, strict=True)):
        placement = host_placement(param)
        if placement is None:
            by_devices.setdefault(frozenset(param.sharding.device_set), []).append(index)
            continue
        arrays = [
            _constant(np.asarray(value), shape, placement(shape)) for value, shape in kept.filled_on_host(param, fill)
        ]
        out[index] = kept.assembled(arrays)
    for indices in by_devices.values():
        together = _filled_together(tuple(storages[i] for i in indices), [params[i] for i in indices], fill)
        for i, stored in zip(indices, together, strict=True):
            out[i] = stored
    return out


HOST_FILL_ENTRIES = 1 << 20


def _constant(value: np.ndarray, shape: tuple[int, ...], placement: Any) -> jax.Array:
    """An array of ``shape`` holding ``value`` at ``placement``: copied from a broadcast NumPy view
    (no compilation) below :data:`HOST_FILL_ENTRIES` entries, filled on the device above (one
    small program per shape; a host copy of a large array costs more than that)."""
    if math.prod(shape) < HOST_FILL_ENTRIES:
        return jax.device_put(np.broadcast_to(value, shape), placement)
    return jnp.full(shape, value, value.dtype, device=placement)


def nbytes(stored: Any) -> int:
    """Bytes of one stored array, concrete or abstract (an array, or 8-bit codes and scales)."""
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(stored))
