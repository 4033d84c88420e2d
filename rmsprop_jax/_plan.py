"""A state's plan: how each leaf's state is kept, decided by ``init`` and read back from the arrays.

``init`` decides, per leaf of the params and before allocating anything, how each state array
of the leaf is kept (:func:`plan_state`): the storage of each array (:mod:`rmsprop_jax._storage`),
whether ``nu`` holds the variance, the weight-decay flag and the packed group
(a :mod:`rmsprop_jax._layouts` layout). The state keeps no record of it beside its arrays: each array's
dtype, a pair's shapes (an 8-bit pair's give its block layout) and the packed
groups' keys say it all, so that every serializer and tree utility handles the state as it
handles optax's. :func:`read` derives the same plan from a state (``update``, the views,
:func:`rmsprop_jax.convert_state` and :func:`rmsprop_jax.state_report` read it), given the
gradients' tree where there is one: a tree mismatch then names the first leaf path that
differs, and a ``None`` gradient leaf (Equinox's frozen layers) is allowed where the state
has a leaf.

This module holds the plan and the rules that combine the storage's and the layout's
answers; it computes nothing of a step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rmsprop_jax import _layout_protocol as layout_protocol
from rmsprop_jax import _layouts as layouts
from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax import _placement as placement
from rmsprop_jax import _storage as storage
from rmsprop_jax import _storage_kinds as kinds
from rmsprop_jax._dtypes import ResolvedStateDtype
from rmsprop_jax._layout_protocol import FieldGroups, Layout, PackingPlan
from rmsprop_jax._state import FIELDS, MU, NU, TRACE, Field, RmsPropState
from rmsprop_jax._storage_protocol import LeafStorages


@dataclasses.dataclass(frozen=True)
class LeafPlan:
    """Everything decided about one leaf's state (static, hashable)."""

    path: str
    shape: tuple[int, ...]
    storages: LeafStorages
    decayed: bool = True
    """Whether weight decay applies to the leaf (``weight_decay_mask``), as the plan's grouping saw it."""
    on_host: bool = False
    """Whether the leaf's state arrays live in host memory (``offload_state``; :mod:`rmsprop_jax._placement`)."""


@dataclasses.dataclass(frozen=True)
class StatePlan:
    """The plan of one :class:`~rmsprop_jax.RmsPropState`.

    Attributes:
      packing: Which leaves share a stacked group (a :class:`~rmsprop_jax.PackingPlan`; one group
        per leaf where nothing is packed). Its ``treedef`` is the params' tree structure.
      leaves: One :class:`LeafPlan` per leaf, in the params' leaf order.
      layout: The layout the fields are in (:mod:`rmsprop_jax._layouts`): every method below
        that moves arrays between leaves, groups and fields asks it.
    """

    packing: PackingPlan
    leaves: tuple[LeafPlan, ...]
    layout: Layout

    @property
    def treedef(self) -> Any:
        return self.packing.treedef

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        return self.packing.groups

    def stand_in_params(self) -> Any:
        """The params' tree with a stand-in at each leaf: what a per-leaf prefix rule (matched by path)
        reads where the params themselves are not at hand."""
        return jax.tree.unflatten(self.treedef, [0] * len(self.leaves))

    @property
    def packed(self) -> bool:
        """Whether some group holds several leaves (the fields are then in a grouping layout)."""
        return self.packing.packs


class Request(NamedTuple):
    """What the optimizer asks of its state, as ``init`` plans it."""

    state_dtypes: Callable[[Any], list[ResolvedStateDtype]]
    """Each leaf's ``state_dtype`` (the per-leaf policy's choice), of the params."""
    centered: bool
    momentum: bool
    largest_packed: int
    """The largest leaf (entries) that packs (:meth:`rmsprop_jax._layout_stacked.Thresholds.largest`)."""
    pack_small_leaves: bool
    decayed: Callable[[Any], list[bool]]
    """The per-leaf weight-decay flags of the params."""
    thresholds: layouts.Thresholds = layouts.DEFAULT_THRESHOLDS
    offloaded: Callable[[Any], list[bool]] | None = None
    """Each leaf's ``offload_state`` flag, of the params (``None``: none is offloaded)."""


def plan_state(params: Any, request: Request) -> StatePlan:
    """Each leaf's storage, variance form, weight-decay flag and group, from the params alone."""
    with_paths = compat.leaves_with_paths(params)
    decayed = request.decayed(params)
    on_host = [False] * len(with_paths) if request.offloaded is None else request.offloaded(params)
    storages = []
    for (_, leaf), state_dtype in zip(with_paths, request.state_dtypes(params), strict=True):
        value = compat.value_of(leaf)
        nu = kinds.for_param(value, state_dtype, signed=False)
        signed = kinds.for_param(value, state_dtype, signed=True)
        storages.append(
            LeafStorages(
                nu,
                signed if request.centered else None,
                signed if request.momentum else None,
                request.centered and nu.keeps_centered_variance,
            )
        )

    def key(index: int, leaf: Any) -> Any:
        if not storages[index].nu.packable:
            return None
        sharding = placement.sharding_key(leaf)
        if sharding is None:
            return None
        return (compat.value_of(leaf).dtype, storages[index].nu, decayed[index], on_host[index], sharding)

    layout = layouts.chosen(request.pack_small_leaves)
    chosen = layout.plan(params, key, request.largest_packed, request.thresholds)
    leaves = [
        LeafPlan(path, chosen.shapes[index], storages[index], decayed[index], on_host[index])
        for index, (path, _) in enumerate(with_paths)
    ]
    return StatePlan(chosen, tuple(leaves), layouts.settled(layout, chosen))


class TreeMismatchError(ValueError):
    """A tree (gradients, params, or another field) does not match the state's leaves."""


def first_difference(expected: Sequence[str], got: Sequence[str]) -> str:
    """The first leaf path in one list and not at the same place in the other, as a phrase."""
    for mine, theirs in zip(expected, got, strict=False):
        if mine != theirs:
            return f"the state has leaf {mine} where it has {theirs}"
    if len(expected) > len(got):
        return f"the state has leaf {expected[len(got)]}, which it lacks"
    if len(got) > len(expected):
        return f"it has leaf {got[len(expected)]}, which the state lacks"
    return "their tree structures differ"


def _paths(tree: Any, is_leaf: Callable[[Any], bool]) -> list[str]:
    with_paths = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
    return [jax.tree_util.keystr(path) or "<root>" for path, _ in with_paths]


def mismatch(what: str, plan: StatePlan, tree: Any) -> TreeMismatchError:
    """The error for a ``what`` tree that does not match the plan's leaves, naming the first path that
    differs."""
    expected = [leaf.path for leaf in plan.leaves]
    got = _paths(tree, lambda x: x is None or compat.is_variable(x))
    return TreeMismatchError(
        f"The {what} tree does not match the optimizer state's leaves (nothing is broadcast): "
        f"{first_difference(expected, got)}. Pass the {what} of the params the state was built for "
        "(tx.init(params))."
    )


def leaves_of(what: str, plan: StatePlan, tree: Any) -> list[Any]:
    """``tree``'s entries at the state's leaves (``None`` where ``tree`` has ``None``)."""
    try:
        leaves = plan.treedef.flatten_up_to(tree)
    except (ValueError, TypeError):
        raise mismatch(what, plan, tree) from None
    for leaf in leaves:
        value = compat.value_of(leaf)
        if value is not None and not hasattr(value, "shape") and not isinstance(value, (int, float, complex)):
            raise mismatch(what, plan, tree)
    return leaves


def _storage_of(field: Field, stored: Any, where: str) -> storage.Storage:
    """The storage that keeps ``stored``, read from the array itself."""
    kept = kinds.read(stored, field.signed)
    if kept is None:
        raise ValueError(f"The optimizer state's {field.name} at {where} holds {stored!r}, not an array")
    return kept


def _shape_of(stored: Any) -> tuple[int, ...]:
    return tuple(jnp.shape(kinds.param_shaped(stored)))


def _field_groups(field: Field, tree: Any) -> tuple[Layout, FieldGroups]:
    layout = layouts.of_field(tree)
    try:
        return layout, layout.read(tree)
    except ValueError as error:
        raise ValueError(f"The optimizer state's {field.name} {error}") from None


def read(state: RmsPropState, decayed: Sequence[bool] | None = None) -> StatePlan:
    """The plan of ``state``, read from its arrays (no optimizer needed).

    Args:
      state: An :class:`~rmsprop_jax.RmsPropState` built by ``init`` (or a view, a conversion, a
        restored checkpoint of one).
      decayed: Each leaf's weight-decay flag, where the caller knows them (``update``).

    Raises:
      ValueError: the state's fields disagree with one another (a corrupted or hand-made state).
    """
    if not isinstance(state, RmsPropState):
        raise ValueError(f"expected an RmsPropState, got a {type(state).__name__}")
    if state.nu is None:  # the state of an empty params tree
        return StatePlan(PackingPlan(jax.tree.structure(None), (), (), ()), (), layouts.chosen(False))
    read_fields = {
        field: _field_groups(field, getattr(state, field.name))
        for field in FIELDS
        if getattr(state, field.name) is not None
    }
    layout, nu = read_fields[NU]
    for field, (other_layout, other) in read_fields.items():
        if other_layout != layout or other.treedef != nu.treedef or set(other.stacked) != set(nu.stacked):
            raise ValueError(
                f"The optimizer state's {field.name} and nu are laid out differently: "
                f"{first_difference(nu.paths, other.paths)}"
            )
    fields = {field: groups for field, (_, groups) in read_fields.items()}
    groups_of = {index: members for members in nu.stacked for index in members}
    shapes, leaves = [], []
    for index, path in enumerate(nu.paths):
        members = groups_of.get(index)
        kept: dict[Field, storage.Storage] = {}
        for field, read_field in fields.items():
            array = read_field.own[index] if members is None else read_field.stacked[members]
            kept[field] = _storage_of(field, array, path)
        shape = _shape_of(nu.own[index]) if members is None else _shape_of(nu.stacked[members])[1:]
        shapes.append(shape)
        storages = LeafStorages(
            kept[NU],
            kept.get(MU),
            kept.get(TRACE),
            MU in kept and kept[NU].keeps_centered_variance,
        )
        flag = True if decayed is None else decayed[index]
        nu_array = nu.own[index] if members is None else nu.stacked[members]
        leaves.append(LeafPlan(path, shape, storages, flag, placement.on_host(nu_array)))
    singles = [(index,) for index in range(len(nu.paths)) if index not in groups_of]
    groups = tuple(sorted([*singles, *nu.stacked], key=lambda group: group[0]))
    plan = PackingPlan(nu.treedef, nu.paths, tuple(shapes), groups)
    return StatePlan(plan, tuple(leaves), layouts.settled(layout, plan))


def group_arrays(plan: StatePlan, tree: Any) -> list[storage.Stored]:
    """One stored array per group of the plan, from a state field in the plan's layout."""
    return plan.layout.entries(plan.packing, tree)


def leaf_arrays(plan: StatePlan, tree: Any) -> list[storage.Stored]:
    """One stored array per leaf, in the params' leaf order (a group's scattered to its members)."""
    return layout_protocol.leaf_values(plan.layout, plan.packing, group_arrays(plan, tree))


def gathered(plan: StatePlan, values: Sequence[Any]) -> list[Any]:
    """Values per leaf (the params' leaf order) gathered into one per group, as the layout keeps them."""
    return layout_protocol.group_values(plan.layout, plan.packing, values)


def field_arrays(state: RmsPropState, plan: StatePlan, by_group: bool = True) -> dict[Field, list[Any]]:
    """Each present field's stored arrays, per group (or per leaf)."""
    read_field = group_arrays if by_group else leaf_arrays
    return {
        field: read_field(plan, getattr(state, field.name))
        for field in FIELDS
        if getattr(state, field.name) is not None
    }


def laid_out(plan: StatePlan, arrays: Sequence[Any], like: Sequence[Any]) -> Any:
    """One field from its arrays per group, in the plan's layout, a single leaf's wrapped as ``like``'s
    leaf is."""
    return plan.layout.field(plan.packing, arrays, like)
