"""The stacked layout: small same-shape leaves' state arrays stacked in groups.

One of the two :class:`~rmsprop_jax._layout_protocol.Layout` implementations (the other is one
array per leaf, :mod:`rmsprop_jax._layout_per_leaf`); the registry :mod:`rmsprop_jax._layouts`
picks it for ``pack_small_leaves=True``. ``init`` decides a
:class:`~rmsprop_jax._layout_protocol.PackingPlan` once, from the params alone, and each state
field (``nu``, ``mu``, ``trace``) where some group stacks becomes a
:class:`~rmsprop_jax._state.PackedGroups` pair, arrays only: the params' tree with each packed
leaf marked :class:`~rmsprop_jax._state.InGroup`, and one stacked array per group, keyed by its
members' leaf numbers (:func:`group_name`), the members' arrays stacked on a new leading axis
(never ravelled, so a member's sharding ``P(*spec)`` becomes the group's ``P(None, *spec)``).
The keys are the plan: ``update`` and the views read the groups back from them
(:func:`members_of`), so that a checkpoint, a msgpack file or a pure dictionary carries the
layout with the arrays, and nothing that is not an array is in the state.

This module knows nothing of the step's arithmetic (:mod:`rmsprop_jax._leaf_update`) nor of
how an array is stored (a storage kind): it groups leaves, stacks and unstacks.
:mod:`rmsprop_jax._plan` gives it the key that decides which leaves may share a group.

Which leaves are packed (:func:`plan_for`), by constants rather than run-time measurement, so
that a layout is the same on every machine:

- Only leaves of at most :func:`largest_packed` entries: packing pays where a leaf's fixed cost
  (a kernel and buffers per state array) dominates its bytes: up to 16K entries with momentum,
  8K centered with momentum, 2K centered without. Plain RMSProp (no momentum, not centered)
  packs nothing: its step gains nothing (``benchmarks/NOTES.md``, "Packing: the prototype").
- Only with leaves of the same shape, dtype, storage, weight-decay flag and visible sharding
  (the key :mod:`rmsprop_jax._plan` builds). A storage says whether it stacks
  (:attr:`rmsprop_jax._storage_protocol.Storage.packable`: 8-bit codes stay per leaf).
- A leaf whose sharding cannot be seen stays per leaf: a tracer on a mesh with Auto axes
  (``jax.jit(tx.init)`` on an Auto mesh reads every sharding as replicated). Concrete arrays,
  tracers on an Explicit mesh, and Flax NNX variables with sharding metadata show theirs.
- Groups hold at most :data:`GROUP_LEAVES` leaves and :data:`GROUP_ELEMENTS` entries; a group
  needs at least two leaves. The constants are :class:`Thresholds`' defaults, which a
  benchmark may replace (``build_rmsprop(..., thresholds=...)``) without touching the module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax import _placement as placement
from rmsprop_jax._layout_protocol import FieldGroups, GroupKey, PackingPlan, flat_groups
from rmsprop_jax._state import InGroup, PackedGroups

GROUP_ELEMENTS = 1 << 18
"""The most entries one group holds (64 leaves of 4096): each group is one stacked gradient copy
per step, and very large stacks compile slowly (one group of 4096 leaves: 42 s)."""

GROUP_LEAVES = 64
"""The most leaves one group holds: at 4096 leaves of 1K entries, groups of 64 compiled in 0.32x
optax's time against 0.42x for groups of 256, stepping as fast (``benchmarks/NOTES.md``,
"Packing: `pack_small_leaves` as built")."""

LARGEST_PACKED_MOMENTUM = 1 << 14
"""The largest leaf (entries) packed with momentum, not centered: stepping 0.80x of per leaf at
8K entries, 0.87x at 16K (``benchmarks/NOTES.md``, "Packing: the prototype")."""

LARGEST_PACKED_CENTERED_MOMENTUM = 1 << 13
"""The largest leaf packed for centered RMSProp with momentum: 0.63x of per leaf at 8K entries;
at 16K the prototype lost (1.49x optax)."""

LARGEST_PACKED_CENTERED = 1 << 11
"""The largest leaf packed for centered RMSProp without momentum: 0.66x of per leaf at 1K
entries, but 1.14x at 4K and 1.38x at 8K (the update leaves the group as one more copy)."""


class Thresholds(NamedTuple):
    """The constants that decide what packs (the defaults are the module's documented constants).

    A benchmark or an experiment passes other values (``build_rmsprop(..., thresholds=...)``);
    the factories always use the defaults, so that a layout is the same on every machine.
    """

    largest_momentum: int = LARGEST_PACKED_MOMENTUM
    largest_centered_momentum: int = LARGEST_PACKED_CENTERED_MOMENTUM
    largest_centered: int = LARGEST_PACKED_CENTERED
    group_leaves: int = GROUP_LEAVES
    group_elements: int = GROUP_ELEMENTS

    def largest(self, centered: bool, momentum: bool) -> int:
        """The largest leaf, in entries, that a variant packs (0: plain RMSProp packs nothing)."""
        if centered:
            return self.largest_centered_momentum if momentum else self.largest_centered
        return self.largest_momentum if momentum else 0


DEFAULT_THRESHOLDS = Thresholds()


def largest_packed(centered: bool, momentum: bool) -> int:
    """The largest leaf, in entries, that a variant packs with the default thresholds."""
    return DEFAULT_THRESHOLDS.largest(centered, momentum)


def group_name(members: Sequence[int]) -> str:
    """A stacked group's key in :attr:`~rmsprop_jax._state.PackedGroups.stacked`: its leaf numbers."""
    return "_".join(str(index) for index in members)


def members_of(name: str) -> tuple[int, ...]:
    """The leaf numbers of a stacked group's key; raises for a key that no group has."""
    parts = str(name).split("_")
    if len(parts) < 2 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{name!r} is not a packed group's key (leaf numbers joined by '_', at least two)")
    return tuple(int(part) for part in parts)


def is_packed(field: Any) -> bool:
    """Whether a state field is in the packed layout (a ``PackedGroups`` pair, or the mapping NNX
    makes of one)."""
    if isinstance(field, PackedGroups):
        return True
    return isinstance(field, Mapping) and set(field.keys()) == set(PackedGroups._fields)


def parts(field: Any) -> tuple[Any, Mapping[str, Any]]:
    """A field's per-leaf tree and its stacked groups (none for the per-leaf layout)."""
    if isinstance(field, PackedGroups):
        return field.per_leaf, field.stacked
    if is_packed(field):
        return field["per_leaf"], field["stacked"]
    return field, {}


def plan_for(
    params: Any,
    largest: int,
    key: GroupKey,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> PackingPlan:
    """The plan for ``params``: leaves with equal ``key(index, leaf)`` share groups.

    Args:
      params: The params tree.
      largest: The largest leaf (entries) packed.
      key: What else a group's leaves share (dtype, storage, weight-decay flag, sharding),
        or ``None`` for a leaf that stays per leaf.
      thresholds: The group caps (:attr:`Thresholds.group_leaves`, :attr:`Thresholds.group_elements`).
    """
    with_paths = compat.leaves_with_paths(params)
    treedef = compat.structure(params)
    paths = tuple(path for path, _ in with_paths)
    leaves = [leaf for _, leaf in with_paths]
    shapes = tuple(tuple(jnp.shape(compat.value_of(leaf))) for leaf in leaves)
    open_groups: dict[Hashable, list[int]] = {}
    groups: list[list[int]] = []
    for index, leaf in enumerate(leaves):
        size = 1
        for extent in shapes[index]:
            size *= extent
        shared = key(index, leaf) if 0 < size <= largest else None
        if shared is None:
            groups.append([index])
            continue
        group_key = (shapes[index], shared)
        group = open_groups.get(group_key)
        full = group is not None and (
            len(group) == thresholds.group_leaves or (len(group) + 1) * size > thresholds.group_elements
        )
        if group is None or full:
            group = open_groups[group_key] = []
            groups.append(group)
        group.append(index)
    return PackingPlan(treedef, paths, shapes, tuple(tuple(group) for group in groups))


def stack(arrays: Sequence[Any]) -> Any:
    """Arrays (or stored pairs) of one group, stacked on a new leading axis; one array as it is."""
    if len(arrays) == 1:
        return arrays[0]
    return jax.tree.map(lambda *members: jnp.stack(members), *arrays)


def unstack(stacked: Any, size: int, offsets: Sequence[jax.Array] | None = None) -> list[Any]:
    """The members of a group's array (``size`` of them), in the group's order.

    With ``offsets`` (:func:`member_offsets`), member ``k`` is read at the runtime offset
    ``offsets[k]`` rather than at the constant ``k``: the same values, from kernels that XLA
    compiles once per shape instead of once per member.
    """
    if size == 1:
        return [stacked]
    if offsets is None:
        return [jax.tree.map(lambda x, k=k: x[k], stacked) for k in range(size)]
    return [
        jax.tree.map(lambda x, at=offsets[k]: jax.lax.dynamic_index_in_dim(x, at, keepdims=False), stacked)
        for k in range(size)
    ]


def member_offsets(anchor: jax.Array, size: int) -> list[jax.Array]:
    """The offsets ``0, 1, ..., size - 1`` as ``uint32`` scalars that XLA cannot fold into constants.

    XLA:CPU compiles one kernel per distinct fused computation (about 10 ms each), and a member
    read at a constant offset is a computation of its own: on a real model, where few leaves
    share a shape, those reads made packing compile slower than per leaf
    (``benchmarks/NOTES.md``, "Real models: why packing compiled slower on real trees"). Offsets
    held in buffers make every member's read of one shape the same kernel. Each offset is the
    previous one plus one through a ``sort`` (an op that XLA neither fuses into its consumer nor
    folds), so that the ops that make them are alike too, the first included (through a sort of
    0); the 0 is computed from ``anchor`` (any non-empty floating array of the step) by a comparison
    that is false for every value, NaN included. Unsigned, so that no index is wrapped as
    negative (which would add a kernel per group size). Under ``vmap`` the offsets are batched
    like the anchor, and each read becomes a gather: the same values.
    """
    first = jnp.ravel(anchor)[0]
    zero = jnp.logical_and(first != first, first == first).astype(jnp.uint32)
    one, ceiling = zero + 1, zero + jnp.uint32(2**30)
    offsets = [jax.lax.sort(jnp.stack([zero, ceiling]))[0]]
    for _ in range(size - 1):
        offsets.append(jax.lax.sort(jnp.stack([offsets[-1] + one, ceiling]))[0])
    return offsets


def _field(plan: PackingPlan, entries: Sequence[Any], like: Sequence[Any]) -> Any:
    leaves: list[Any] = [None] * len(plan.paths)
    stacked: dict[str, Any] = {}
    for group, entry in zip(plan.groups, entries, strict=True):
        if len(group) == 1:
            leaves[group[0]] = compat.with_value(like[group[0]], entry)
            continue
        stacked[group_name(group)] = entry
        for index in group:
            leaves[index] = InGroup()
    per_leaf = jax.tree.unflatten(plan.treedef, leaves)
    if not stacked:
        return per_leaf
    return PackedGroups(per_leaf, stacked)


def _read(field: Any) -> FieldGroups:
    per_leaf, stacked = parts(field)
    treedef, paths, leaves = flat_groups(per_leaf, compat.is_stored_leaf)
    own = [None if isinstance(leaf, InGroup) else compat.stored(leaf) for leaf in leaves]
    groups = {members_of(name): compat.stored(array) for name, array in stacked.items()}
    claimed = sorted(index for members in groups for index in members)
    marked = [index for index, leaf in enumerate(own) if leaf is None]
    if claimed != marked:
        raise ValueError(
            f"is not a packed layout of its leaves: the groups {sorted(groups)} claim leaves {claimed}, "
            f"the leaves marked as packed are {marked}"
        )
    return FieldGroups(treedef, paths, own, groups)


@dataclasses.dataclass(frozen=True)
class StackedGroups:
    """The stacked layout (``pack_small_leaves=True``): a :class:`~rmsprop_jax._layout_protocol.Layout`.

    A field is a :class:`~rmsprop_jax._state.PackedGroups` pair: the params' tree, each leaf in a
    group marked :class:`~rmsprop_jax._state.InGroup`, and each group's members' arrays stacked on a
    new leading axis under its key (:func:`group_name`). A plan that stacks nothing is written per
    leaf, in the params' tree.
    """

    name: str = "stacked groups"
    field_names: tuple[str, ...] = PackedGroups._fields
    """The names the layout's containers add to a state array's path (checkpoint messages)."""

    def plan(self, params: Any, key: GroupKey, largest: int, caps: Thresholds = DEFAULT_THRESHOLDS) -> PackingPlan:
        return plan_for(params, largest, key, caps)

    def holds(self, field: Any) -> bool:
        return is_packed(field)

    def read(self, field: Any) -> FieldGroups:
        return _read(field)

    def gather(self, members: Sequence[Any]) -> Any:
        return stack(members)

    def scatter(self, value: Any, size: int, offsets: Sequence[jax.Array] | None = None) -> list[Any]:
        return unstack(value, size, offsets)

    def member_offsets(self, anchor: Any, size: int) -> list[jax.Array] | None:
        return member_offsets(anchor, size)

    def entries(self, plan: PackingPlan, field: Any) -> list[Any]:
        per_leaf, stacked = parts(field)
        own = plan.treedef.flatten_up_to(per_leaf)
        by_members = {members_of(name): array for name, array in stacked.items()}
        return [compat.stored(own[group[0]] if len(group) == 1 else by_members[group]) for group in plan.groups]

    def placed(self, plan: PackingPlan, entries: Sequence[Any], params: Sequence[Any]) -> list[Any]:
        """Each stacked group placed with its members' sharding on the new leading axis, and a group of
        variables one variable whose sharding metadata gains that axis."""
        out = list(entries)
        for number, group in enumerate(plan.groups):
            if len(group) > 1:
                first = params[group[0]]
                array = placement.placed_stacked(out[number], placement.sharding_key(first))
                out[number] = compat.stacked_variable(first, array)
        return out

    def field(self, plan: PackingPlan, entries: Sequence[Any], like: Sequence[Any]) -> Any:
        return _field(plan, entries, like)

    def map_entries(self, field: Any, fn: Callable[[tuple[int, ...], Any], Any]) -> Any:
        per_leaf, stacked = parts(field)
        leaves, treedef = jax.tree_util.tree_flatten(per_leaf, is_leaf=compat.is_stored_leaf)
        mapped = [leaf if isinstance(leaf, InGroup) else fn((index,), leaf) for index, leaf in enumerate(leaves)]
        tree = jax.tree_util.tree_unflatten(treedef, mapped)
        if not stacked:
            return tree
        return PackedGroups(tree, {name: fn(members_of(name), array) for name, array in stacked.items()})


STACKED = StackedGroups()
