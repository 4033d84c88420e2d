"""How an RMSProp state keeps each leaf, and why: :func:`state_report`.

``state_dtype="8bit"`` and ``pack_small_leaves=True`` apply leaf by leaf, and on some
models to no leaf at all (a DQN's 120 x 84 layer fits no 8-bit block; nothing packs in
plain RMSProp). The report reads a state (concrete, or from ``jax.eval_shape``) and says
for each leaf how it is stored, whether it is 8-bit or why not, whether it is packed or
why not, and what it costs in bytes. It reads the state's plan from its arrays
(:func:`rmsprop_jax._plan.read`) and gives each decision the rule's reason: the 8-bit rule
(its kind's, :mod:`rmsprop_jax._storage_8bit`) over each float leaf's shape and visible
shards, and the packing rule (the plan of :data:`rmsprop_jax._layouts.PACKING`) over the state's leaves.
The weight-decay mask is not in the state: a leaf that it kept out of a group reads "its
weight-decay flag or sharding differs".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rmsprop_jax import _layouts as layouts
from rmsprop_jax import _placement as placement
from rmsprop_jax import _plan as plans
from rmsprop_jax import _storage as storage
from rmsprop_jax import _storage_kinds as kinds
from rmsprop_jax._dtypes import ResolvedStateDtype
from rmsprop_jax._state import RmsPropState
from rmsprop_jax._state_policy import StateDtypeOrPolicy, StatePolicy, state_policy
from rmsprop_jax._state_views import the_rmsprop_state


class LeafReport(NamedTuple):
    """How one leaf of the params has its state kept.

    Attributes:
      path: The leaf's path in the params (``jax.tree_util.keystr``).
      shape: The param's shape.
      storage: ``"float32"`` (or the state's float dtype), or ``"8bit tiles"`` /
        ``"8bit runs"``, ``"8bit runs of 125"``, ``"8bit boxes of 25x8"`` (uint8 codes with one
        float32 scale per 16 x 16 tile, run or box; the layouts are in the Numerics page).
      eight_bit: ``"yes"``, or ``"no: ..."`` with the reason (too small, no block fits the
        shape or its shards, or not requested).
      packing: ``"group N (K leaves)"``, or ``"per leaf: ..."`` with the reason.
      state_bytes: Bytes of this leaf's state arrays (its share of a packed group's).
      rule: Which rule of a per-leaf ``state_dtype`` chose the leaf's value, and the value
        (``"state_dtype['embed'] = float32"``), where :func:`state_report` was given the
        ``state_dtype``; else ``""``.
      memory: Where the leaf's state arrays live: ``"device"``, or ``"pinned_host"``
        (``offload_state``; read from the arrays, so an abstract state from
        ``jax.eval_shape``, which keeps no memory kind, reads ``"device"``).
      four_bit: ``"yes"`` where the leaf's ``nu`` is kept in 4 bits (``state_dtype="4bit"``; its
        ``mu`` and momentum buffer are 8-bit), or ``"no: ..."`` with the reason.

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> tx = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit")
      >>> (leaf,) = rmsprop_jax.state_report(tx.init({"w": jnp.zeros((128, 128))})).leaves
      >>> leaf.storage, leaf.eight_bit, leaf.state_bytes
      ('8bit tiles', 'yes', 16640)
    """

    path: str
    shape: tuple[int, ...]
    storage: str
    eight_bit: str
    packing: str
    state_bytes: int
    rule: str = ""
    memory: str = "device"
    four_bit: str = ""


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
        columns: tuple[str, ...] = ("leaf", "shape", "storage", "8-bit", "packing", "bytes")
        rows = [
            (leaf.path, _dims(leaf.shape), leaf.storage, leaf.eight_bit, leaf.packing, str(leaf.state_bytes))
            for leaf in self.leaves
        ]
        four_bit = sum(math.prod(leaf.shape) for leaf in self.leaves if leaf.four_bit == "yes")
        if four_bit:
            columns = (*columns[:4], "4-bit", *columns[4:])
            rows = [(*row[:4], leaf.four_bit, *row[4:]) for row, leaf in zip(rows, self.leaves, strict=True)]
        if any(leaf.memory != "device" for leaf in self.leaves):
            columns = (*columns, "memory")
            rows = [(*row, leaf.memory) for row, leaf in zip(rows, self.leaves, strict=True)]
        if any(leaf.rule for leaf in self.leaves):
            columns = (*columns, "chosen by")
            rows = [(*row, leaf.rule) for row, leaf in zip(rows, self.leaves, strict=True)]
        widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

        eight_bit = sum(math.prod(leaf.shape) for leaf in self.leaves if leaf.eight_bit == "yes")
        packed = sum(1 for leaf in self.leaves if leaf.packing.startswith("group"))
        total = (
            f"{len(self.leaves)} leaves, {self.param_entries} params: state {self.state_bytes} bytes "
            f"({self.bytes_per_param:.2f} per param); {100 * eight_bit / max(self.param_entries, 1):.1f}% of the "
            f"params 8-bit{f' ({100 * four_bit / max(self.param_entries, 1):.1f}% 4-bit)' if four_bit else ''}, "
            f"{packed} leaves packed"
        )
        return "\n".join([line(columns), *(line(row) for row in rows), total])


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) or "()"


def state_report(state: Any, *, state_dtype: StateDtypeOrPolicy = None, params: Any = None) -> StateReport:
    """How an RMSProp state keeps each leaf: storage, 8-bit or why not, packing or why not, bytes.

    ``state_dtype="8bit"`` and ``pack_small_leaves=True`` apply per leaf, and may apply to
    no leaf of a model at all; this says which leaves they reach, and why the others keep
    a plain array. Build the state without memory with ``jax.eval_shape(tx.init, params)``.
    A leaf that 8-bit would reach in a float state reads "not requested", as does a leaf
    that would pack in a per-leaf state.

    With a per-leaf ``state_dtype`` (a pytree prefix or a callable), pass it here too: each
    row then says which rule chose the leaf's value (:attr:`LeafReport.rule`).

    Args:
      state: An optimizer state holding exactly one :class:`rmsprop_jax.RmsPropState`
        (a chain's or ``inject_hyperparams``' state will do), concrete or abstract.
      state_dtype: The ``state_dtype`` the optimizer was built with, to name the rule that
        chose each leaf's value (``None``: not reported).
      params: The params, where ``state_dtype`` is a callable (it is called with each param).

    Returns:
      A :class:`rmsprop_jax.StateReport`; ``print(report)`` shows one row per leaf and a
      total line with the bytes per parameter.

    Raises:
      ValueError: ``state`` holds no ``RmsPropState`` or several; ``state_dtype`` is a callable and
        ``params`` is missing, or does not match the state's leaves.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import rmsprop_jax
      >>> params = {"b1": jnp.zeros(84), "b2": jnp.zeros(84), "w": jnp.zeros((120, 84)), "v": jnp.zeros((256, 64))}
      >>> tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit", pack_small_leaves=True)
      >>> report = rmsprop_jax.state_report(jax.eval_shape(tx.init, params))
      >>> for leaf in report.leaves:
      ...     print(f"{leaf.path:6} {leaf.storage:37} {leaf.eight_bit:22} {leaf.packing}")
      ['b1'] float32                               no: 84 entries < 4096  group 0 (2 leaves)
      ['b2'] float32                               no: 84 entries < 4096  group 0 (2 leaves)
      ['v']  8bit boxes of 32x8                    yes                    per leaf: 8-bit codes
      ['w']  8bit boxes of 5x21                    yes                    per leaf: 8-bit codes
      >>> print(f"{report.bytes_per_param:.2f} bytes per param")
      2.09 bytes per param
    """
    found = the_rmsprop_state(state, "state_report")
    plan = plans.read(found)
    shares = [0.0] * len(plan.leaves)
    arrays = plans.field_arrays(found, plan)
    for stored_arrays in arrays.values():
        for group, stored in zip(plan.groups, stored_arrays, strict=True):
            for index in group:
                shares[index] += storage.nbytes(stored) / len(group)
    own = _own_arrays(plan, found.nu)
    packing_words = _packing_words(found, plan, own)
    leaves = tuple(
        LeafReport(
            path=leaf.path,
            shape=leaf.shape,
            storage=leaf.storages.nu.name,
            eight_bit=_reach_word(leaf, stored),
            four_bit=_reach_word(leaf, stored, "4-bit"),
            packing=word,
            state_bytes=round(share),
            memory="pinned_host" if leaf.on_host else "device",
        )
        for leaf, stored, word, share in zip(plan.leaves, own, packing_words, shares, strict=True)
    )
    if state_dtype is not None:
        rules = _rules(plan, state_policy("state_dtype", state_dtype), params)
        leaves = tuple(leaf._replace(rule=rule) for leaf, rule in zip(leaves, rules, strict=True))
    count_bytes = 0 if found.count is None else storage.nbytes(found.count)
    return StateReport(leaves, sum(math.prod(leaf.shape) for leaf in plan.leaves), round(sum(shares)) + count_bytes)


def _rules(plan: plans.StatePlan, policy: StatePolicy, params: Any) -> list[str]:
    """Each leaf's rule and value, as the policy chooses them over the state's leaves."""
    if params is None:
        if policy.function is not None:
            raise ValueError("state_report needs the params to report a callable state_dtype's choices")
        params = plan.stand_in_params()
    choices = policy.choose(params)
    if len(choices) != len(plan.leaves):
        raise ValueError(f"the params have {len(choices)} leaves, the state {len(plan.leaves)}")
    return [f"{choice.rule} = {_value_name(choice.value)}" for choice in choices]


def _value_name(value: ResolvedStateDtype) -> str:
    if value is None:
        return "None (default)"
    return value if isinstance(value, str) else jnp.dtype(value).name


def _own_arrays(plan: plans.StatePlan, field: Any) -> list[Any]:
    """Each leaf's own ``nu`` array (an 8-bit leaf's codes), or a stand-in of its shape for a packed
    leaf: what the rules read of a leaf (its shape, and its shards where they are visible)."""
    out: list[Any] = [None] * len(plan.leaves)
    for group, stored in zip(plan.groups, plans.group_arrays(plan, field), strict=True):
        for index in group:
            if len(group) > 1:  # stacked groups are float arrays
                out[index] = jax.ShapeDtypeStruct(plan.leaves[index].shape, plan.leaves[index].storages.nu.dtype)
            else:
                out[index] = kinds.param_shaped(stored)
    return out


def _reach_word(leaf: plans.LeafPlan, stored: Any, column: str = "8-bit") -> str:
    """The reach column's word for a leaf (``"yes"``, or why not), as its storage kind's rule gives it."""
    kind = next(kind for kind in kinds.reach_kinds() if kind.reach_column == column)
    return kind.reach(leaf.storages.nu, leaf.storages.mu or leaf.storages.trace, leaf.shape, stored)


def _packing_words(state: RmsPropState, plan: plans.StatePlan, stored: Sequence[Any]) -> list[str]:
    """Each leaf's packing word: its group, or why it is per leaf."""
    centered, momentum = state.mu is not None, state.trace is not None
    largest = layouts.largest_packed(centered, momentum)
    variant = " with ".join(n for n, on in (("centered", centered), ("momentum", momentum)) if on)

    def key(index: int, leaf: Any) -> Any:
        nu = plan.leaves[index].storages.nu
        if not nu.packable:
            return None
        sharding = placement.sharding_key(leaf)
        return None if sharding is None else (nu, sharding)

    stand_ins = jax.tree.unflatten(plan.treedef, list(stored))
    candidate = layouts.PACKING.plan(stand_ins, key, largest, layouts.DEFAULT_THRESHOLDS)
    grouped = {index: group for group in candidate.groups if len(group) > 1 for index in group}
    group_of = {index: group for group in plan.groups for index in group}
    numbers = {group: number for number, group in enumerate(plan.groups)}
    kinds = Counter((leaf.shape, leaf.storages.nu) for leaf in plan.leaves)
    words = []
    for index, leaf in enumerate(plan.leaves):
        entries = math.prod(leaf.shape)
        own = group_of[index]
        alike = kinds[(leaf.shape, leaf.storages.nu)] > 1
        if len(own) > 1:
            words.append(f"group {numbers[own]} ({len(own)} leaves)")
        elif not leaf.storages.nu.packable:  # a kind's codes ("8bit tiles": "8-bit codes")
            words.append(f"per leaf: {leaf.storages.nu.name.split()[0].replace('bit', '-bit')} codes")
        elif largest == 0:
            words.append("per leaf: plain RMSProp never packs")
        elif entries > largest:
            words.append(f"per leaf: {entries} entries > {largest} ({variant or 'plain'})")
        elif not alike:
            words.append("per leaf: no other leaf of its shape and dtype")
        elif plan.packed:
            words.append("per leaf: its weight-decay flag or sharding differs, or was not visible")
        elif index in grouped:
            others = len(grouped[index]) - 1
            words.append(f"per leaf: not requested (packs with {others} other{'s' if others > 1 else ''})")
        else:
            words.append("per leaf: not requested, or its sharding differs or is not visible")
    return words
