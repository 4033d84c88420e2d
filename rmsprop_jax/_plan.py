"""A state's plan: how each leaf's state is kept, decided once by ``init``.

``init`` decides, per leaf of the params and before allocating anything, everything that
``update``, the state views, :func:`rmsprop_jax.convert_state` and
:func:`rmsprop_jax.state_report` need to know about the leaf (:class:`LeafPlan`): the
storage of each state array (:mod:`rmsprop_jax._storage`), whether ``nu`` holds the
variance, the weight-decay flag, the packed group (:mod:`rmsprop_jax._packing`), and the
report's reasons. The :class:`StatePlan` is the state's ``plan`` field: a pytree node with
no arrays whose static data is the plan, so that ``jit``, ``vmap``, ``scan`` and
``eval_shape`` carry it, a checkpoint stores nothing for it, and a state describes itself
(conversion needs no optimizer). Nothing reads a leaf's storage back from array types.

This module holds the plan and the rules that combine the storage's and the layout's
answers; it computes nothing of a step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from rmsprop_jax import _nnx_compat as compat
from rmsprop_jax import _packing as packing
from rmsprop_jax import _storage as storage
from rmsprop_jax._dtypes import ResolvedStateDtype
from rmsprop_jax._state import FIELDS, Field, RmsPropState


class LeafStorages(NamedTuple):
    """How one leaf keeps each state array (``None`` for an array the configuration lacks)."""

    nu: storage.Storage
    mu: storage.Storage | None
    trace: storage.Storage | None
    nu_holds_variance: bool
    """Whether ``nu`` holds the variance ``E[g^2] - E[g]^2`` itself (centered, with a storage that
    :attr:`~rmsprop_jax._storage.BlockStorage.keeps_centered_variance`) rather than ``E[g^2]``."""

    def of(self, field: Field) -> storage.Storage | None:
        return getattr(self, field.name)

    @property
    def rounds(self) -> bool:
        """Whether any of the leaf's arrays is rounded stochastically (and needs seeds)."""
        return any(s is not None and s.rounds for s in (self.nu, self.mu, self.trace))


@dataclasses.dataclass(frozen=True)
class LeafPlan:
    """Everything decided about one leaf's state (static, hashable).

    Two plans are equal when their decisions are; the report's words explain a decision and
    take no part in comparisons (a float32 view of any state has a float32 state's structure).
    """

    path: str
    shape: tuple[int, ...]
    storages: LeafStorages
    decayed: bool
    """Whether weight decay applies to the leaf (``weight_decay_mask``), as the plan's grouping saw it."""
    eight_bit: str = dataclasses.field(default="", compare=False)
    """The state report's word: ``"yes"``, or ``"no: ..."`` with the reason."""
    packing: str = dataclasses.field(default="", compare=False)
    """The state report's word: ``"group N (K leaves)"``, or ``"per leaf: ..."`` with the reason."""


class StatePlan:
    """The plan of one :class:`~rmsprop_jax.RmsPropState`: a pytree node with no children.

    Attributes:
      packing: Which leaves share a stacked group (a :class:`~rmsprop_jax.PackingPlan`; one group
        per leaf where nothing is packed). Its ``treedef`` is the params' tree structure.
      leaves: One :class:`LeafPlan` per leaf, in the params' leaf order.
    """

    __slots__ = ("_hash", "leaves", "packing")

    def __init__(self, packing_plan: packing.PackingPlan, leaves: Sequence[LeafPlan]) -> None:
        self.packing = packing_plan
        self.leaves = tuple(leaves)
        self._hash = hash((self.packing, self.leaves))  # once: jit hashes the state's structure every call

    @property
    def treedef(self) -> Any:
        return self.packing.treedef

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        return self.packing.groups

    @property
    def packed(self) -> bool:
        """Whether the fields are :class:`~rmsprop_jax._packing.Packed` nodes (some group is stacked)."""
        return self.packing.packs

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, StatePlan):
            return NotImplemented
        return self._hash == other._hash and self.packing == other.packing and self.leaves == other.leaves

    def __repr__(self) -> str:
        kinds = sorted({leaf.storages.nu.name for leaf in self.leaves})
        return f"StatePlan({len(self.leaves)} leaves: {', '.join(kinds) or 'none'}; {self.packing!r})"


jax.tree_util.register_pytree_node(StatePlan, lambda plan: ((), plan), lambda plan, _: plan)


class Request(NamedTuple):
    """What the optimizer asks of its state, as ``init`` plans it."""

    state_dtype: ResolvedStateDtype
    centered: bool
    momentum: bool
    largest_packed: int
    """The largest leaf (entries) that packs (:meth:`rmsprop_jax._packing.Thresholds.largest`)."""
    pack_small_leaves: bool
    decayed: Callable[[Any], list[bool]]
    """The per-leaf weight-decay flags of the params."""
    thresholds: packing.Thresholds = packing.DEFAULT_THRESHOLDS


def plan_state(params: Any, request: Request) -> StatePlan:
    """Each leaf's storage, variance form, weight-decay flag and group, from the params alone."""
    with_paths = compat.leaves_with_paths(params)
    decayed = request.decayed(params)
    storages, eight_bit = [], []
    for path, leaf in with_paths:
        value = compat.value_of(leaf)
        nu, word = storage.for_param(value, request.state_dtype, signed=False, path=path)
        signed = storage.for_param(value, request.state_dtype, signed=True, path=path)[0]
        storages.append(
            LeafStorages(
                nu,
                signed if request.centered else None,
                signed if request.momentum else None,
                request.centered and nu.keeps_centered_variance,
            )
        )
        eight_bit.append(word)

    def key(index: int, leaf: Any) -> Any:
        if not storages[index].nu.packable:
            return None
        sharding = packing.sharding_key(leaf)
        if sharding is None:
            return None
        return (compat.value_of(leaf).dtype, storages[index].nu, decayed[index], sharding)

    candidate = packing.plan_for(params, request.largest_packed, key, request.thresholds)
    chosen = candidate if request.pack_small_leaves else packing.per_leaf(candidate)
    words = _packing_words(chosen, candidate, storages, request)
    leaves = [
        LeafPlan(path, chosen.shapes[index], storages[index], decayed[index], eight_bit[index], words[index])
        for index, (path, _) in enumerate(with_paths)
    ]
    return StatePlan(chosen, leaves)


def _packing_words(
    chosen: packing.PackingPlan,
    candidate: packing.PackingPlan,
    storages: Sequence[LeafStorages],
    request: Request,
) -> list[str]:
    """The state report's word on each leaf's packing."""
    words = [""] * len(chosen.shapes)
    for number, group in enumerate(chosen.groups):
        for index in group:
            if len(group) > 1:
                words[index] = f"group {number} ({len(group)} leaves)"
    variant = " with ".join(n for n, on in (("centered", request.centered), ("momentum", request.momentum)) if on)
    for group in candidate.groups:
        for index in group:
            if words[index]:
                continue
            entries = _entries(chosen.shapes[index])
            if not storages[index].nu.packable:
                words[index] = "per leaf: 8-bit codes"
            elif request.largest_packed == 0:
                words[index] = "per leaf: plain RMSProp never packs"
            elif entries > request.largest_packed:
                words[index] = f"per leaf: {entries} entries > {request.largest_packed} ({variant or 'plain'})"
            elif len(group) > 1:
                others = f"{len(group) - 1} other" + ("s" if len(group) > 2 else "")
                words[index] = f"per leaf: not requested (packs with {others})"
            elif _alike(index, chosen, storages):
                words[index] = "per leaf: its weight-decay flag or sharding differs, or was not visible"
            else:
                words[index] = "per leaf: no other leaf of its shape and dtype"
    return words


def _alike(index: int, plan: packing.PackingPlan, storages: Sequence[LeafStorages]) -> bool:
    """Whether another leaf has this one's shape and ``nu`` storage."""
    mine = (plan.shapes[index], storages[index].nu)
    return any(i != index and (plan.shapes[i], storages[i].nu) == mine for i in range(len(plan.shapes)))


def _entries(shape: tuple[int, ...]) -> int:
    size = 1
    for extent in shape:
        size *= extent
    return size


def of(state: RmsPropState) -> StatePlan:
    """The state's plan; raises for a state that ``init`` did not build."""
    if not isinstance(state.plan, StatePlan):
        raise ValueError(
            f"This RmsPropState carries no plan (its plan field is {state.plan!r}): build optimizer states "
            "with tx.init(params), and change one's storage with rmsprop_jax.convert_state(state, like)."
        )
    return state.plan


def group_arrays(plan: StatePlan, tree: Any) -> list[storage.Stored]:
    """One stored array per group of the plan, from a state field (packed or per leaf)."""
    if isinstance(tree, packing.Packed):
        return [compat.stored(x) for x in tree.groups]
    return [compat.stored(x) for x in plan.treedef.flatten_up_to(tree)]


def leaf_arrays(plan: StatePlan, tree: Any) -> list[storage.Stored]:
    """One stored array per leaf, in the params' leaf order (a packed field unstacked)."""
    if isinstance(tree, packing.Packed):
        return [compat.stored(x) for x in packing.unpack(tree)]
    return [compat.stored(x) for x in plan.treedef.flatten_up_to(tree)]


def field_arrays(state: RmsPropState, plan: StatePlan, by_group: bool = True) -> dict[Field, list[Any]]:
    """Each present field's stored arrays, per group (or per leaf)."""
    read = group_arrays if by_group else leaf_arrays
    return {field: read(plan, getattr(state, field.name)) for field in FIELDS if getattr(state, field.name) is not None}
