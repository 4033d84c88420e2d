"""The per-leaf layout (rmsprop_jax._layout_per_leaf): one array per leaf, in the params' tree."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import rmsprop_jax
from rmsprop_jax import _plan as plans
from rmsprop_jax._layout_per_leaf import PER_LEAF


def test_every_group_is_one_leaf_and_a_field_is_the_params_tree():
    params = {"a": jnp.zeros(8), "b": jnp.zeros(8), "w": jnp.zeros((3, 5))}
    plan = PER_LEAF.plan(params, lambda index, leaf: "same", 1 << 20, None)
    assert plan.groups == ((0,), (1,), (2,)) and not plan.packs
    state = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit").init(params)
    assert plans.read(state).layout is PER_LEAF
    assert [type(x).__name__ for x in PER_LEAF.entries(plan, state.nu)] == ["ArrayImpl", "ArrayImpl", "ArrayImpl"]


def test_a_group_of_several_is_refused():
    with pytest.raises(ValueError, match="groups of one leaf, not 2"):
        PER_LEAF.gather([jnp.zeros(2), jnp.zeros(2)])
    with pytest.raises(ValueError, match="groups of one leaf, not 3"):
        PER_LEAF.scatter(jnp.zeros((3, 2)), 3)
    assert PER_LEAF.member_offsets(jnp.ones(1), 3) is None
