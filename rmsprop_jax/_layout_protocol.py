"""What a layout of a state field is: the protocol, and the plan a layout decides.

A **layout** (:class:`Layout`) arranges one state field's stored arrays (``nu``, ``mu``, ``trace``)
over the params' leaves. It does three things:

- **plan**: from the params alone, which leaves share one stored array (a :class:`PackingPlan`:
  groups of leaf indices, each leaf in exactly one group);
- **gather**: values per leaf (gradients, params, stored arrays) into one value per group, and a
  state field into its stored array per group;
- **scatter**: one value per group (a step's updates and new arrays) back to the leaves, and into
  a state field in the layout.

Two layouts implement it: one array per leaf (:mod:`rmsprop_jax._layout_per_leaf`) and small
same-shape leaves stacked in groups (:mod:`rmsprop_jax._layout_stacked`); the registry
:mod:`rmsprop_jax._layouts` is the only module that names them. A layout knows nothing of the step's
arithmetic (:mod:`rmsprop_jax._leaf_update`) nor of how an array is stored (a storage kind): a group's
stored value is whatever tree the storage keeps (an array, or a pair of codes and scales), and a
layout maps over it. What may share a group beyond the shape (dtype, storage, weight-decay flag,
memory, sharding) the caller says with a key (:data:`GroupKey`), from :mod:`rmsprop_jax._plan`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax

GroupKey = Callable[[int, Any], Hashable | None]
"""What a leaf's group shares beyond its shape, ``key(index, param_leaf)``; ``None``: the leaf stays
alone."""


@dataclasses.dataclass(frozen=True)
class PackingPlan:
    """Which leaf of the params is kept in which group: static, hashable data.

    Attributes:
      treedef: The params' tree structure.
      paths: Each leaf's path (``jax.tree_util.keystr``), in the params' leaf order.
      shapes: Each leaf's shape.
      groups: Leaf indices per group, every leaf exactly once, groups ordered by their first
        leaf. A group of one leaf is kept as that leaf's own array; a larger one is stacked.

    Read it from a state with :func:`rmsprop_jax.packing_plan`.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> params = {"a": jnp.zeros(8), "b": jnp.zeros(8), "c": jnp.zeros(3)}
      >>> tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True)
      >>> plan = rmsprop_jax.packing_plan(jax.eval_shape(tx.init, params))
      >>> plan
      PackingPlan(3 leaves, 2 of them in 1 groups)
      >>> plan.groups, plan.packs
      (((0, 1), (2,)), True)
    """

    treedef: Any
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    groups: tuple[tuple[int, ...], ...]

    @property
    def packs(self) -> bool:
        """Whether any group holds more than one leaf."""
        return any(len(group) > 1 for group in self.groups)

    def __repr__(self) -> str:
        stacked = [group for group in self.groups if len(group) > 1]
        packed = sum(len(group) for group in stacked)
        return f"PackingPlan({len(self.paths)} leaves, {packed} of them in {len(stacked)} groups)"

    def __str__(self) -> str:
        lines = []
        for number, group in enumerate(self.groups):
            shape = self.shapes[group[0]]
            kind = f"{len(group)} leaves of shape {shape}" if len(group) > 1 else f"per leaf, shape {shape}"
            lines.append(f"group {number}: {kind}: " + ", ".join(self.paths[i] for i in group))
        return "\n".join(lines)


class FieldGroups(NamedTuple):
    """A state field read back by its layout, before anything is known of its plan.

    Attributes:
      treedef: The params' tree structure (of the field's per-leaf part).
      paths: Each leaf's path.
      own: Each leaf's own stored array, ``None`` where the leaf's state is in a larger group.
      stacked: Each larger group's stored value, keyed by its members' leaf indices.
    """

    treedef: Any
    paths: tuple[str, ...]
    own: list[Any]
    stacked: dict[tuple[int, ...], Any]


@runtime_checkable
class Layout(Protocol):
    """How one state field's arrays are arranged over the params' leaves (a frozen, hashable value).

    A state's fields are all in one layout; :mod:`rmsprop_jax._layouts` tells which from a field.
    """

    @property
    def name(self) -> str:
        """What the layout is called in messages and reports."""
        ...

    @property
    def field_names(self) -> tuple[str, ...]:
        """The names the layout's containers add to a state array's path (checkpoint messages)."""
        ...

    def plan(self, params: Any, key: GroupKey, largest: int, caps: Any) -> PackingPlan:
        """Which leaves share a group: leaves of one shape and one ``key`` that are at most ``largest``
        entries may (``caps`` bound a group's size; a layout that groups nothing ignores both)."""
        ...

    def holds(self, field: Any) -> bool:
        """Whether a state field is in this layout (read from its containers: a state records nothing else)."""
        ...

    def read(self, field: Any) -> FieldGroups:
        """A field in this layout, read back per leaf and per group; raises for an inconsistent one."""
        ...

    def gather(self, members: Sequence[Any]) -> Any:
        """One group's value from its members' (the group's order): stacked, or one member as it is."""
        ...

    def scatter(self, value: Any, size: int, offsets: Sequence[jax.Array] | None = None) -> list[Any]:
        """A group's ``size`` members from its value; with ``offsets``, read at those runtime offsets
        (:meth:`member_offsets`)."""
        ...

    def member_offsets(self, anchor: Any, size: int) -> list[jax.Array] | None:
        """Offsets for :meth:`scatter` that make every member's read one kernel, or ``None``."""
        ...

    def entries(self, plan: PackingPlan, field: Any) -> list[Any]:
        """A field's stored value per group of ``plan`` (an entry wrapped as the field holds it)."""
        ...

    def placed(self, plan: PackingPlan, entries: Sequence[Any], params: Sequence[Any]) -> list[Any]:
        """Each group's entry placed and wrapped as its members' params are (``init``: a group of
        several leaves takes its members' sharding and variable type)."""
        ...

    def field(self, plan: PackingPlan, entries: Sequence[Any], like: Sequence[Any]) -> Any:
        """A field in this layout from one stored value per group, a single leaf's wrapped as ``like``'s
        leaf is (a variable's metadata)."""
        ...

    def map_entries(self, field: Any, fn: Callable[[tuple[int, ...], Any], Any]) -> Any:
        """A field with each group's entry replaced by ``fn(members, entry)``, wrapped as it was."""
        ...


def group_values(layout: Layout, plan: PackingPlan, leaves: Sequence[Any]) -> list[Any]:
    """Values per leaf (the params' leaf order) gathered into one value per group of ``plan``."""
    return [layout.gather([leaves[index] for index in group]) for group in plan.groups]


def leaf_values(layout: Layout, plan: PackingPlan, values: Sequence[Any]) -> list[Any]:
    """One value per group scattered back to the leaves (the params' leaf order)."""
    out: list[Any] = [None] * len(plan.paths)
    for group, value in zip(plan.groups, values, strict=True):
        for index, member in zip(group, layout.scatter(value, len(group)), strict=True):
            out[index] = member
    return out


def flat_groups(tree: Any, is_leaf: Callable[[Any], bool]) -> tuple[Any, tuple[str, ...], list[Any]]:
    """A per-leaf tree's structure, paths and entries (``is_leaf`` stops at a stored leaf)."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    paths = tuple(jax.tree_util.keystr(path) or "<root>" for path, _ in with_paths)
    return treedef, paths, [leaf for _, leaf in with_paths]
