"""The layouts' registry (:mod:`rmsprop_jax._layouts`) and protocol (:mod:`rmsprop_jax._layout_protocol`).

A layout is its own module behind the protocol; nothing but the layouts' modules and the registry
names one. Each layout's gather and scatter are inverse, and a field written in a layout reads
back as the same groups. The last test plugs a new layout in by adding it to the registry alone,
and trains with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ROOT, names_used

import rmsprop_jax
from rmsprop_jax import _layouts as layouts
from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax import _plan as plans
from rmsprop_jax._layout_per_leaf import PER_LEAF
from rmsprop_jax._layout_protocol import FieldGroups, GroupKey, Layout, PackingPlan, flat_groups, group_values
from rmsprop_jax._layout_stacked import STACKED, stack, unstack
from rmsprop_jax._state import InGroup

LAYOUT_MODULES = {"_layout_per_leaf", "_layout_stacked", "_layouts"}
LAYOUT_NAMES = {"PER_LEAF", "STACKED", "PerLeaf", "StackedGroups", "PackedGroups", "group_name", "members_of"}
ALLOWED = {
    "_state": {"PackedGroups"},  # defines the stacked layout's container, which RmsPropState's fields may be
    "__init__": set(),
}


def test_no_module_but_the_layouts_and_the_registry_names_a_layout():
    package = ROOT / "rmsprop_jax"
    offenders = {}
    for path in [*package.glob("*.py"), *package.glob("presets/*.py")]:
        if path.stem in LAYOUT_MODULES:
            continue
        used = names_used(path) & ((LAYOUT_MODULES - {"_layouts"}) | LAYOUT_NAMES)
        used -= ALLOWED.get(path.stem, set())
        if used:
            offenders[str(path.relative_to(ROOT))] = sorted(used)
    assert offenders == {}


def test_both_layouts_implement_the_protocol_and_the_registry_tells_a_field_apart():
    assert isinstance(PER_LEAF, Layout) and isinstance(STACKED, Layout)
    assert layouts.chosen(False) is PER_LEAF and layouts.chosen(True) is STACKED
    params = {"a": jnp.zeros(8), "b": jnp.zeros(8), "w": jnp.zeros((4, 4))}
    packed = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True).init(params)
    plain = rmsprop_jax.rmsprop(1e-3, momentum=0.9).init(params)
    assert layouts.of_field(packed.nu) is STACKED and layouts.of_field(plain.nu) is PER_LEAF
    assert plans.read(packed).layout is STACKED and plans.read(plain).layout is PER_LEAF
    assert set(layouts.field_names()) == {"per_leaf", "stacked"}
    # a packing layout's plan with nothing to group is written, and read back, per leaf
    alone = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True).init({"w": jnp.zeros((4, 4))})
    assert plans.read(alone).layout is PER_LEAF


def _key(index: int, leaf: Any) -> Any:
    del index
    return jnp.result_type(leaf)


@pytest.mark.parametrize("layout", [PER_LEAF, STACKED], ids=lambda layout: layout.name)
def test_gather_and_scatter_are_inverse_and_a_written_field_reads_back(layout):
    params = {"a": jnp.zeros(8), "b": jnp.ones(8), "c": jnp.zeros(3), "d": jnp.full(8, 2.0), "w": jnp.zeros((3, 5))}
    plan = layout.plan(params, _key, 64, layouts.DEFAULT_THRESHOLDS)
    assert sorted(i for group in plan.groups for i in group) == list(range(5))
    assert plan.packs is (layout is STACKED)
    values = [jnp.full(shape, float(i)) for i, shape in enumerate(plan.shapes)]
    groups = group_values(layout, plan, values)
    back = [None] * len(values)
    for group, value in zip(plan.groups, groups, strict=True):
        for index, member in zip(group, layout.scatter(value, len(group)), strict=True):
            back[index] = member
    assert all(np.array_equal(a, b) for a, b in zip(values, back, strict=True))
    field = layout.field(plan, groups, [None] * len(values))
    assert layout.holds(field) and layouts.of_field(field) is layout
    assert all(np.array_equal(a, b) for a, b in zip(layout.entries(plan, field), groups, strict=True))
    read = layout.read(field)
    assert read.treedef == plan.treedef and read.paths == plan.paths
    assert set(read.stacked) == {group for group in plan.groups if len(group) > 1}
    doubled = layout.map_entries(field, lambda members, entry: entry * 2)
    assert all(np.array_equal(a, 2 * b) for a, b in zip(layout.entries(plan, doubled), groups, strict=True))


class Pairs(NamedTuple):
    """The toy layout's container: the params' tree (paired leaves marked), and each pair stacked."""

    alone: Any
    pairs: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _PairsLayout:
    """A toy layout: leaves of one shape and key stacked two by two, whatever their size."""

    name: str = "toy pairs"
    field_names: tuple[str, ...] = Pairs._fields

    def plan(self, params: Any, key: GroupKey, largest: int, caps: Any) -> PackingPlan:
        del largest, caps
        with_paths = compat.leaves_with_paths(params)
        shapes = tuple(tuple(jnp.shape(compat.value_of(leaf))) for _, leaf in with_paths)
        waiting: dict[Any, int] = {}
        groups: list[tuple[int, ...]] = []
        for index, (_, leaf) in enumerate(with_paths):
            shared = key(index, leaf)
            if shared is None:
                groups.append((index,))
                continue
            first = waiting.pop((shapes[index], shared), None)
            if first is None:
                waiting[(shapes[index], shared)] = index
            else:
                groups.append((first, index))
        groups += [(index,) for index in waiting.values()]
        paths = tuple(path for path, _ in with_paths)
        return PackingPlan(compat.structure(params), paths, shapes, tuple(sorted(groups)))

    def holds(self, field: Any) -> bool:
        return isinstance(field, Pairs)

    def read(self, field: Any) -> FieldGroups:
        treedef, paths, leaves = flat_groups(field.alone, compat.is_stored_leaf)
        own = [None if isinstance(leaf, InGroup) else compat.stored(leaf) for leaf in leaves]
        pairs = {tuple(int(i) for i in name.split("_")): value for name, value in field.pairs.items()}
        return FieldGroups(treedef, paths, own, pairs)

    def gather(self, members: Sequence[Any]) -> Any:
        return stack(members)

    def scatter(self, value: Any, size: int, offsets: Sequence[jax.Array] | None = None) -> list[Any]:
        return unstack(value, size, offsets)

    def member_offsets(self, anchor: Any, size: int) -> list[jax.Array] | None:
        return None

    def entries(self, plan: PackingPlan, field: Any) -> list[Any]:
        own = plan.treedef.flatten_up_to(field.alone)
        return [compat.stored(own[g[0]]) if len(g) == 1 else field.pairs["_".join(map(str, g))] for g in plan.groups]

    def placed(self, plan: PackingPlan, entries: Sequence[Any], params: Sequence[Any]) -> list[Any]:
        return list(entries)

    def field(self, plan: PackingPlan, entries: Sequence[Any], like: Sequence[Any]) -> Any:
        leaves: list[Any] = [None] * len(plan.paths)
        pairs = {}
        for group, entry in zip(plan.groups, entries, strict=True):
            if len(group) == 1:
                leaves[group[0]] = compat.with_value(like[group[0]], entry)
            else:
                pairs["_".join(map(str, group))] = entry
                leaves[group[0]] = leaves[group[1]] = InGroup()
        return Pairs(jax.tree.unflatten(plan.treedef, leaves), pairs)

    def map_entries(self, field: Any, fn: Callable[[tuple[int, ...], Any], Any]) -> Any:
        leaves, treedef = jax.tree_util.tree_flatten(field.alone, is_leaf=compat.is_stored_leaf)
        mapped = [leaf if isinstance(leaf, InGroup) else fn((i,), leaf) for i, leaf in enumerate(leaves)]
        pairs = {name: fn(tuple(int(i) for i in name.split("_")), v) for name, v in field.pairs.items()}
        return Pairs(jax.tree_util.tree_unflatten(treedef, mapped), pairs)


def test_a_new_layout_plugs_in_through_the_registry_alone_and_trains(monkeypatch):
    """Issue 29: a layout added to the registry (here in place of the stacked one for
    ``pack_small_leaves=True``) plans, steps under jit, is read back by the views and converts,
    with nothing else changed: the same trajectory, bit for bit, as per leaf."""
    toy = _PairsLayout()
    assert isinstance(toy, Layout)
    monkeypatch.setattr(layouts, "LAYOUTS", (toy, *layouts.LAYOUTS))
    monkeypatch.setattr(layouts, "PACKING", toy)
    params = {"big": jnp.ones((64, 64)), "b1": jnp.ones(70), "b2": jnp.ones(70), "b3": jnp.ones(70)}
    grads = jax.tree.map(lambda p: jnp.linspace(-1.0, 2.0, p.size).reshape(p.shape), params)

    def run(pack: bool) -> tuple[Any, Any]:
        tx = rmsprop_jax.rmsprop(0.01, momentum=0.9, centered=True, pack_small_leaves=pack)
        state = tx.init(params)
        step = jax.jit(lambda p, s, g: tx.update(g, s, p))
        p = params
        for k in range(3):
            updates, state = step(p, state, jax.tree.map(lambda g, k=k: g * (k + 1), grads))
            p = optax.apply_updates(p, updates)
        return p, state

    toy_params, toy_state = run(True)
    plain_params, plain_state = run(False)
    assert isinstance(toy_state.nu, Pairs) and isinstance(toy_state.trace, Pairs)
    assert rmsprop_jax.packing_plan(toy_state).groups == ((0, 1), (2,), (3,))  # sorted keys: b1 b2 b3 big
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), toy_params, plain_params))
    views = rmsprop_jax.state_as_float32(toy_state), rmsprop_jax.state_as_float32(plain_state)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), *views))
    converted = rmsprop_jax.convert_state(plain_state, toy_state)
    assert isinstance(converted.nu, Pairs)
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), rmsprop_jax.state_as_float32(converted), views[1])
    )
    report = rmsprop_jax.state_report(toy_state)
    assert [leaf.packing for leaf in report.leaves][:2] == ["group 0 (2 leaves)"] * 2
