"""The per-leaf layout: each leaf's state array on its own, in the params' tree.

One of the two :class:`~rmsprop_jax._layout_protocol.Layout` implementations (the other stacks
small leaves in groups, :mod:`rmsprop_jax._layout_stacked`); the registry
:mod:`rmsprop_jax._layouts` picks it by default. Every group is one leaf, a field is the params'
tree with a stored array (or a storage kind's pair) at each leaf, as optax keeps its states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax._layout_protocol import FieldGroups, GroupKey, PackingPlan, flat_groups


def _alone(size: int) -> None:
    if size != 1:
        raise ValueError(f"the per-leaf layout has groups of one leaf, not {size}")


@dataclasses.dataclass(frozen=True)
class PerLeaf:
    """One state array per leaf: a :class:`~rmsprop_jax._layout_protocol.Layout`."""

    name: str = "per leaf"
    field_names: tuple[str, ...] = ()
    """The names the layout's containers add to a state array's path: none (the params' tree)."""

    def plan(self, params: Any, key: GroupKey, largest: int, caps: Any = None) -> PackingPlan:
        """One group per leaf (``key``, ``largest`` and ``caps`` group nothing here)."""
        del key, largest, caps
        with_paths = compat.leaves_with_paths(params)
        shapes = tuple(tuple(jnp.shape(compat.value_of(leaf))) for _, leaf in with_paths)
        groups = tuple((index,) for index in range(len(with_paths)))
        return PackingPlan(compat.structure(params), tuple(path for path, _ in with_paths), shapes, groups)

    def holds(self, field: Any) -> bool:
        """Any field: the registry asks the other layouts first."""
        del field
        return True

    def read(self, field: Any) -> FieldGroups:
        treedef, paths, leaves = flat_groups(field, compat.is_stored_leaf)
        return FieldGroups(treedef, paths, [compat.stored(leaf) for leaf in leaves], {})

    def gather(self, members: Sequence[Any]) -> Any:
        _alone(len(members))
        return members[0]

    def scatter(self, value: Any, size: int, offsets: Sequence[jax.Array] | None = None) -> list[Any]:
        del offsets
        _alone(size)
        return [value]

    def member_offsets(self, anchor: Any, size: int) -> list[jax.Array] | None:
        del anchor, size
        return None

    def entries(self, plan: PackingPlan, field: Any) -> list[Any]:
        return [compat.stored(leaf) for leaf in plan.treedef.flatten_up_to(field)]

    def placed(self, plan: PackingPlan, entries: Sequence[Any], params: Sequence[Any]) -> list[Any]:
        """The entries as they are: each leaf's array was allocated where its param is."""
        del plan, params
        return list(entries)

    def field(self, plan: PackingPlan, entries: Sequence[Any], like: Sequence[Any]) -> Any:
        leaves = [compat.with_value(like[group[0]], entry) for group, entry in zip(plan.groups, entries, strict=True)]
        return jax.tree.unflatten(plan.treedef, leaves)

    def map_entries(self, field: Any, fn: Callable[[tuple[int, ...], Any], Any]) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(field, is_leaf=compat.is_stored_leaf)
        return jax.tree_util.tree_unflatten(treedef, [fn((index,), leaf) for index, leaf in enumerate(leaves)])


PER_LEAF = PerLeaf()
