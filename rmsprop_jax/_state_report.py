"""How an RMSProp state keeps each leaf, and why: :func:`state_report`.

``state_dtype="8bit"`` and ``pack_small_leaves=True`` apply leaf by leaf, and on some
models to no leaf at all (a DQN's 120 x 84 layer fits no 8-bit block; nothing packs in
plain RMSProp). The report reads a state (concrete, or from ``jax.eval_shape``) and says
for each leaf how it is stored, whether it is 8-bit or why not, whether it is packed or
why not, and what it costs in bytes. It reads the thresholds from where they live
(:func:`rmsprop_jax._storage_8bit.block_layout`, :func:`rmsprop_jax._packing.largest_packed`);
for a leaf left out of every group it checks only the visible part of the packing key (the
shape and state dtype) and names the rest (weight-decay flag, sharding) as the reason. A
state keeps no record of the options it was built with, so a leaf that 8-bit or packing
would reach reads "not requested".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from rmsprop_jax import _packing as packing
from rmsprop_jax import _storage as storage
from rmsprop_jax import _storage_8bit as codec
from rmsprop_jax._state import RmsPropState
from rmsprop_jax._state_views import plan_of, the_rmsprop_state


class LeafReport(NamedTuple):
    """How one leaf of the params has its state kept.

    Attributes:
      path: The leaf's path in the params (``jax.tree_util.keystr``).
      shape: The param's shape.
      storage: ``"float32"`` (or the state's float dtype), or ``"8bit tiles"`` /
        ``"8bit runs"`` (uint8 codes with one float32 scale per 16 x 16 tile or run of 256).
      eight_bit: ``"yes"``, or ``"no: ..."`` with the reason (too small, no block fits the
        shape or its shards, or not requested).
      packing: ``"group N (K leaves)"``, or ``"per leaf: ..."`` with the reason.
      state_bytes: Bytes of this leaf's state arrays (its share of a packed group's).

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> tx = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit")
      >>> (leaf,) = rmsprop_jax.state_report(tx.init({"w": jnp.zeros((64, 64))})).leaves
      >>> leaf.storage, leaf.eight_bit, leaf.state_bytes
      ('8bit tiles', 'yes', 4160)
    """

    path: str
    shape: tuple[int, ...]
    storage: str
    eight_bit: str
    packing: str
    state_bytes: int


class StateReport(NamedTuple):
    """Every leaf's :class:`LeafReport`, and the state's size; ``str()`` is a table.

    Attributes:
      leaves: One :class:`LeafReport` per leaf, in the params' leaf order.
      param_entries: Entries of all params together.
      state_bytes: Bytes of the whole state (every leaf's, and the step count's).

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> report = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3).init({"w": jnp.zeros((64, 64))}))
      >>> report.param_entries, report.state_bytes, report.bytes_per_param
      (4096, 16384, 4.0)
    """

    leaves: tuple[LeafReport, ...]
    param_entries: int
    state_bytes: int

    @property
    def bytes_per_param(self) -> float:
        """State bytes per parameter entry."""
        return self.state_bytes / max(self.param_entries, 1)

    def __str__(self) -> str:
        columns = ("leaf", "shape", "storage", "8-bit", "packing", "bytes")
        rows = [
            (leaf.path, _dims(leaf.shape), leaf.storage, leaf.eight_bit, leaf.packing, str(leaf.state_bytes))
            for leaf in self.leaves
        ]
        widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

        eight_bit = sum(math.prod(leaf.shape) for leaf in self.leaves if leaf.eight_bit == "yes")
        packed = sum(1 for leaf in self.leaves if leaf.packing.startswith("group"))
        total = (
            f"{len(self.leaves)} leaves, {self.param_entries} params: state {self.state_bytes} bytes "
            f"({self.bytes_per_param:.2f} per param); {100 * eight_bit / max(self.param_entries, 1):.1f}% of the "
            f"params 8-bit, {packed} leaves packed"
        )
        return "\n".join([line(columns), *(line(row) for row in rows), total])


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "()"


def _nbytes(stored: Any) -> int:
    """Bytes of one stored array (concrete or abstract): an array, or 8-bit codes and scales."""
    if isinstance(stored, codec.Quantized):
        return _nbytes(stored.codes) + _nbytes(stored.scale)
    return math.prod(stored.shape) * np.dtype(stored.dtype).itemsize


def _group_arrays(field: Any, plan: packing.PackingPlan) -> list[Any]:
    """One stored array per group of ``plan`` (per leaf, a group of one is the leaf's array)."""
    if isinstance(field, packing.Packed):
        return [storage.as_stored(packing.value_of(x)) for x in field.groups]
    return storage.leaves_of(plan.treedef, field)


def _storage_name(stored: Any) -> str:
    if isinstance(stored, codec.Quantized):
        return f"8bit {codec.layout_of(stored)}"
    return np.dtype(stored.dtype).name


def _eight_bit(stored: Any, shape: tuple[int, ...]) -> str:
    if isinstance(stored, codec.Quantized):
        return "yes"
    entries = math.prod(shape)
    if entries < codec.MIN_SIZE:
        return f"no: {entries} entries < {codec.MIN_SIZE}"
    shard = codec.shard_shape(stored) if hasattr(stored, "sharding") else None
    if codec.block_layout(shape) is None:
        return f"no: no {codec.TILE}x{codec.TILE} tile or {codec.RUN}-run fits {_dims(shape)}"
    if shard is not None and codec.block_layout(shape, shard) is None:
        return f"no: no block fits its shards ({_dims(shard)})"
    return f"no: not requested ({codec.block_layout(shape, shard)} fit)"


def _variant(state: RmsPropState) -> str:
    parts = [
        name for name, present in (("centered", state.mu is not None), ("momentum", state.trace is not None)) if present
    ]
    return " with ".join(parts) if parts else "plain"


def _why_per_leaf(index: int, plan: packing.PackingPlan, nus: list[Any], state: RmsPropState) -> str:
    """Why leaf ``index`` is not in a stacked group."""
    if isinstance(nus[index], codec.Quantized):
        return "per leaf: 8-bit codes"
    largest = packing.largest_packed(state.mu is not None, state.trace is not None)
    if largest == 0:
        return "per leaf: plain RMSProp never packs"
    entries = math.prod(plan.shapes[index])
    if entries > largest:
        return f"per leaf: {entries} entries > {largest} ({_variant(state)})"

    def key(i: int) -> tuple:
        return plan.shapes[i], storage.dtype_of(nus[i]), isinstance(nus[i], codec.Quantized)

    alike = [i for i in range(len(plan.shapes)) if i != index and key(i) == key(index)]
    if not alike:
        return "per leaf: no other leaf of its shape and dtype"
    if isinstance(state.nu, packing.Packed):
        return "per leaf: its weight-decay flag or sharding differs, or was not visible"
    others = f"{len(alike)} other" + ("s" if len(alike) > 1 else "")
    return f"per leaf: not requested (packs with {others})"


def state_report(state: Any) -> StateReport:
    """How an RMSProp state keeps each leaf: storage, 8-bit or why not, packing or why not, bytes.

    ``state_dtype="8bit"`` and ``pack_small_leaves=True`` apply per leaf, and may apply to
    no leaf of a model at all; this says which leaves they reach, and why the others keep
    a plain array. Build the state without memory with ``jax.eval_shape(tx.init, params)``.
    A leaf whose storage fits 8-bit but keeps a float state reads "not requested", as does
    a packable leaf of a per-leaf state: the state cannot tell whether the option was given.

    Args:
      state: An optimizer state holding exactly one :class:`rmsprop_jax.RmsPropState`
        (a chain's or ``inject_hyperparams``' state will do), concrete or abstract.

    Returns:
      A :class:`rmsprop_jax.StateReport`; ``print(report)`` shows one row per leaf and a
      total line with the bytes per parameter.

    Raises:
      ValueError: ``state`` holds no ``RmsPropState`` or several.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import rmsprop_jax
      >>> params = {"b1": jnp.zeros(84), "b2": jnp.zeros(84), "w": jnp.zeros((120, 84)), "v": jnp.zeros((256, 64))}
      >>> tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit", pack_small_leaves=True)
      >>> report = rmsprop_jax.state_report(jax.eval_shape(tx.init, params))
      >>> for leaf in report.leaves:
      ...     print(f"{leaf.path:6} {leaf.storage:10} {leaf.eight_bit:36} {leaf.packing}")
      ['b1'] float32    no: 84 entries < 4096                group 0 (2 leaves)
      ['b2'] float32    no: 84 entries < 4096                group 0 (2 leaves)
      ['v']  8bit tiles yes                                  per leaf: 8-bit codes
      ['w']  float32    no: no 16x16 tile or 256-run fits 120x84 per leaf: no other leaf of its shape and dtype
      >>> print(f"{report.bytes_per_param:.2f} bytes per param")
      4.33 bytes per param
    """
    found = the_rmsprop_state(state, "state_report")
    plan = plan_of(found)
    fields = [field for field in (found.nu, found.mu, found.trace) if field is not None]
    per_field = [_group_arrays(field, plan) for field in fields]
    nus: list[Any] = [None] * len(plan.shapes)
    shares = [0.0] * len(plan.shapes)
    where = [""] * len(plan.shapes)
    for number, group in enumerate(plan.groups):
        for arrays in per_field:
            for index in group:
                shares[index] += _nbytes(arrays[number]) / len(group)
        for index in group:
            nu = per_field[0][number]
            nus[index] = nu if len(group) == 1 else _Member(nu.dtype)
            if len(group) > 1:
                where[index] = f"group {number} ({len(group)} leaves)"
    leaves = tuple(
        LeafReport(
            path=plan.paths[index],
            shape=tuple(plan.shapes[index]),
            storage=_storage_name(nus[index]),
            eight_bit=_eight_bit(nus[index], tuple(plan.shapes[index])),
            packing=where[index] or _why_per_leaf(index, plan, nus, found),
            state_bytes=round(shares[index]),
        )
        for index in range(len(plan.shapes))
    )
    count_bytes = 0 if found.count is None else _nbytes(found.count)
    return StateReport(
        leaves,
        sum(math.prod(shape) for shape in plan.shapes),
        round(sum(shares)) + count_bytes,
    )


class _Member(NamedTuple):
    """One member of a stacked group, as the report needs it: its dtype (no slicing, so that
    abstract states work)."""

    dtype: Any
