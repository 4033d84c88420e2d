"""The per-leaf state policy: which ``state_dtype`` each leaf's state is kept in.

``state_dtype`` takes one value for the whole tree (``None``, a float dtype or its name, or
``"8bit"``), or, as optax takes masks, a pytree prefix of such values or a callable
``fn(path, param)`` returning one (:mod:`rmsprop_jax._leaf_rules`): keep embeddings, norms and the
classifier in float32 and the rest in 8 bits, as bitsandbytes' ``GlobalOptimManager`` and torchao
let users do. Each leaf's value then goes through the storage rules of a single value
(:func:`rmsprop_jax._storage_kinds.for_param`: ``"8bit"`` keeps a leaf too small for 8-bit blocks in
float32, as it always has). The state itself records nothing of the policy: each leaf's arrays say
how it is kept, so a policy's state saves, restores and converts as any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np

from rmsprop_jax import _storage_kinds as kinds
from rmsprop_jax._dtypes import ResolvedStateDtype, StateDtype
from rmsprop_jax._leaf_rules import LeafRule, rule

StateDtypeOrPolicy: TypeAlias = StateDtype | Callable[[str, Any], StateDtype] | Any
"""What ``state_dtype`` accepts: one value (``None``, a float dtype or its name, ``"8bit"``, ``"4bit"``), a pytree
prefix of such values, or a callable ``fn(path, param)`` returning one."""

StatePolicy: TypeAlias = LeafRule[ResolvedStateDtype]
"""A validated ``state_dtype``: each leaf's resolved value, and the rule that chose it."""


def _is_one_value(x: Any) -> bool:
    return x is None or isinstance(x, (str, np.dtype, type))


def state_policy(argument: str, state_dtype: StateDtypeOrPolicy) -> StatePolicy:
    """``state_dtype`` validated (each value of a prefix too, naming its entry).

    Raises:
      ValueError: naming the argument or the prefix entry (``Invalid state_dtype['embed'] value``).
    """
    return rule(argument, state_dtype, lambda raw, name: kinds.resolve(name, raw), _is_one_value)


def may_round(policy: StatePolicy) -> bool:
    """Whether some leaf may keep a stochastically rounded state (a callable's choice is not known
    before ``init``: it may)."""
    if policy.function is not None:
        return True
    return any(kinds.rounds(value) for value in policy.known_values())
