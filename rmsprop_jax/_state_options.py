"""How the state is kept, as one options object: its dtype (or per-leaf policy), packing, placement.

The factories and presets take ``state_dtype``, ``pack_small_leaves`` and ``offload_state`` as
keyword arguments (the public surface users know); each passes them on whole as one
:class:`StateOptions`, validated once, in the caller's own argument names, into a
:class:`StateSetup` that ``init`` plans from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

from rmsprop_jax import _layouts as layouts
from rmsprop_jax import _validation as validation
from rmsprop_jax._leaf_rules import LeafRule
from rmsprop_jax._placement import OffloadRule, offload_rule
from rmsprop_jax._state_policy import StateDtypeOrPolicy, StatePolicy, state_policy


class StateOptions(NamedTuple):
    """The state's options as the caller passed them (see :func:`rmsprop_jax.rmsprop`)."""

    state_dtype: StateDtypeOrPolicy = None
    pack_small_leaves: bool = False
    offload_state: OffloadRule = False


@dataclasses.dataclass(frozen=True, eq=False)
class StateSetup:
    """:class:`StateOptions` validated.

    Attributes:
      state_dtype: Each leaf's ``state_dtype`` (:mod:`rmsprop_jax._state_policy`).
      pack_small_leaves: Whether small same-shape leaves stack in groups.
      offload: Each leaf's ``offload_state`` flag (:mod:`rmsprop_jax._placement`).
      thresholds: What packs (benchmarks and experiments change it; the factories keep the default).
    """

    state_dtype: StatePolicy
    pack_small_leaves: bool
    offload: LeafRule[bool]
    thresholds: layouts.Thresholds = layouts.DEFAULT_THRESHOLDS


def validated(
    options: StateOptions, names: Mapping[str, str], thresholds: layouts.Thresholds = layouts.DEFAULT_THRESHOLDS
) -> StateSetup:
    """``options`` validated, each error naming the argument as ``names`` maps it (a preset's own names).

    Raises:
      ValueError: naming the argument (or a prefix entry: ``Invalid state_dtype['embed'] value``).
    """

    def name(key: str) -> str:
        return names.get(key, key)

    validation.check_bool(name("pack_small_leaves"), options.pack_small_leaves)
    return StateSetup(
        state_policy(name("state_dtype"), options.state_dtype),
        options.pack_small_leaves,
        offload_rule(name("offload_state"), options.offload_state),
        thresholds,
    )
