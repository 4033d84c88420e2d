"""The stacked layout (rmsprop_jax._layout_stacked): which leaves share a stacked group, and how it is shown."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import _layout_stacked as packing
from rmsprop_jax import _plan as plans
from rmsprop_jax._codec_8bit import Quantized
from rmsprop_jax._state import InGroup, PackedGroups

MOMENTUM = {"momentum": 0.9}
CENTERED = {"centered": True, "momentum": 0.9}


def plan_of(params, **kwargs):
    tx = rmsprop_jax.rmsprop(1e-3, **{**MOMENTUM, **kwargs}, pack_small_leaves=True)
    return rmsprop_jax.packing_plan(tx.init(params))


def members(plan, group):
    return [plan.paths[i] for i in group]


def test_same_shape_leaves_share_a_group_stacked_on_a_new_leading_axis():
    params = {"a": jnp.zeros(64), "b": jnp.ones((8, 8)), "c": jnp.ones(64), "d": jnp.ones((8, 8)), "e": jnp.ones(64)}
    tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True)
    state = tx.init(params)
    assert isinstance(state.nu, PackedGroups) and isinstance(state.trace, PackedGroups)
    plan = rmsprop_jax.packing_plan(state)
    assert [members(plan, g) for g in plan.groups] == [["['a']", "['c']", "['e']"], ["['b']", "['d']"]]
    assert {k: g.shape for k, g in state.nu.stacked.items()} == {"0_2_4": (3, 64), "1_3": (2, 8, 8)}
    assert all(isinstance(leaf, InGroup) for leaf in state.nu.per_leaf.values())
    assert plan.shapes == ((64,), (8, 8), (64,), (8, 8), (64,))


def test_leaves_differing_in_dtype_storage_or_weight_decay_flag_do_not_share_a_group():
    params = {
        "f32": jnp.zeros(64),
        "f32b": jnp.zeros(64),
        "bf16": jnp.zeros(64, jnp.bfloat16),
        "bf16b": jnp.zeros(64, jnp.bfloat16),
        "f16": jnp.zeros(64, jnp.float16),
    }
    plan = plan_of(params)
    # bfloat16 and float16 params both keep a float32 state, but their dtypes differ
    assert sorted(len(g) for g in plan.groups) == [1, 2, 2]
    mask = {"f32": True, "f32b": False, "bf16": True, "bf16b": True, "f16": True}
    masked = plan_of(params, weight_decay=1e-2, weight_decay_mask=mask)
    assert sorted(len(g) for g in masked.groups) == [1, 1, 1, 2]
    stored = plan_of({"a": jnp.zeros(64), "b": jnp.zeros(64)}, state_dtype="bfloat16")
    assert stored.groups == ((0, 1),)


def test_groups_are_capped_in_leaves_and_in_entries():
    plan = plan_of([jnp.zeros(64)] * (packing.GROUP_LEAVES + 3))
    assert [len(g) for g in plan.groups] == [packing.GROUP_LEAVES, 3]
    size = 2 * packing.GROUP_ELEMENTS // packing.GROUP_LEAVES  # so that the entries cap comes first
    per_group = packing.GROUP_ELEMENTS // size
    plan = plan_of([jnp.zeros(size)] * (per_group + 3), centered=False)
    assert size <= packing.LARGEST_PACKED_MOMENTUM and [len(g) for g in plan.groups] == [per_group, 3]


@pytest.mark.parametrize(
    ("kwargs", "largest"),
    [
        (MOMENTUM, packing.LARGEST_PACKED_MOMENTUM),
        (CENTERED, packing.LARGEST_PACKED_CENTERED_MOMENTUM),
        ({"centered": True, "momentum": None}, packing.LARGEST_PACKED_CENTERED),
    ],
    ids=["momentum", "centered+momentum", "centered"],
)
def test_only_leaves_up_to_the_variants_size_are_packed(kwargs, largest):
    at = {"a": jnp.zeros(largest), "b": jnp.zeros(largest)}
    above = {"a": jnp.zeros(largest + 1), "b": jnp.zeros(largest + 1)}
    assert plan_of(at, **kwargs).groups == ((0, 1),)
    tx = rmsprop_jax.rmsprop(1e-3, **kwargs, pack_small_leaves=True)
    state = tx.init(above)  # nothing packs: the ordinary per-leaf state, shaped like the params
    assert set(state.nu) == {"a", "b"} and state.nu["a"].shape == (largest + 1,)


def test_plain_rmsprop_and_scale_by_rms_without_centering_pack_nothing():
    params = [jnp.zeros(64)] * 8
    for tx in (
        rmsprop_jax.rmsprop(1e-3, pack_small_leaves=True),
        rmsprop_jax.scale_by_rms(pack_small_leaves=True),
        rmsprop_jax.rmsprop(1e-3, bias_correction=True, pack_small_leaves=True),
    ):
        assert not isinstance(tx.init(params).nu, PackedGroups)
    assert isinstance(rmsprop_jax.scale_by_rms(centered=True, pack_small_leaves=True).init(params).nu, PackedGroups)


def test_8bit_leaves_stay_per_leaf_and_small_ones_pack():
    params = {"w1": jnp.ones((64, 64)), "w2": jnp.ones((64, 64)), "b1": jnp.ones(64), "b2": jnp.ones(64)}
    state = rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit", pack_small_leaves=True).init(params)
    plan = rmsprop_jax.packing_plan(state)
    assert plan.groups == ((0, 1), (2,), (3,))  # leaves sorted: b1, b2, w1, w2
    assert isinstance(state.nu.stacked["0_1"], jax.Array) and state.nu.stacked["0_1"].shape == (2, 64)
    assert all(isinstance(state.nu.per_leaf[k], Quantized) for k in ("w1", "w2"))


def test_a_leaf_alone_in_its_shape_keeps_its_own_array():
    state = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True).init(
        {"a": jnp.zeros(3), "b": jnp.zeros(3), "c": jnp.zeros(5)}
    )
    assert state.nu.per_leaf["c"].shape == (5,) and state.nu.stacked["0_1"].shape == (2, 3)


def test_the_plan_is_read_back_from_the_arrays_and_their_keys():
    params = {"a": jnp.zeros(64), "b": jnp.zeros(64)}
    tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True)
    state = tx.init(params)
    assert len(jax.tree.leaves(state.nu)) == 1  # one stacked array; its key names its members
    abstract = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    assert abstract.nu.stacked["0_1"].shape == (2, 64)
    rebuilt = jax.tree.unflatten(jax.tree.structure(state), jax.tree.leaves(state))
    assert plans.read(rebuilt) == plans.read(state) == plans.read(abstract)


def test_packing_plan_shows_groups_paths_and_shapes():
    params = {"layer": {"bias": jnp.zeros(64), "scale": jnp.ones(64)}, "w": jnp.zeros((256, 256))}
    tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True)
    plan = rmsprop_jax.packing_plan(jax.eval_shape(tx.init, params))
    assert str(plan).splitlines() == [
        "group 0: 2 leaves of shape (64,): ['layer']['bias'], ['layer']['scale']",
        "group 1: per leaf, shape (256, 256): ['w']",
    ]
    assert repr(plan) == "PackingPlan(3 leaves, 2 of them in 1 groups)"
    unpacked = rmsprop_jax.packing_plan(rmsprop_jax.rmsprop(1e-3).init(params))
    assert unpacked.groups == ((0,), (1,), (2,)) and unpacked.paths[2] == "['w']"


def test_packing_plan_needs_exactly_one_rmsprop_state():
    tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True)
    state = tx.init([jnp.zeros(2), jnp.zeros(2)])
    with pytest.raises(ValueError, match="exactly one RmsPropState; this one holds 2"):
        rmsprop_jax.packing_plan((state, state))
    with pytest.raises(ValueError, match="holds 0"):
        rmsprop_jax.packing_plan({"other": jnp.zeros(2)})


def test_stack_and_unstack_are_inverse():
    arrays = [jnp.full((2, 3), float(i)) for i in range(4)]
    stacked = packing.stack(arrays)
    assert stacked.shape == (4, 2, 3)
    assert all(np.array_equal(a, b) for a, b in zip(packing.unstack(stacked, 4), arrays, strict=True))
    assert packing.stack(arrays[:1]) is arrays[0]


def test_pack_small_leaves_must_be_a_bool():
    with pytest.raises(ValueError, match="Invalid pack_small_leaves value: 1"):
        rmsprop_jax.rmsprop(1e-3, pack_small_leaves=1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="Invalid pack_small_leaves value: 'yes'"):
        rmsprop_jax.scale_by_rms(pack_small_leaves="yes")  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("transform", ["eager", "jit", "vmap"])
def test_member_offsets_are_0_to_n_minus_1_whatever_the_anchor(transform):
    anchors = jnp.array([[1.5, 2.0], [jnp.nan, 0.0], [-jnp.inf, 3.0]])

    def offsets(anchor):
        return jnp.stack(packing.member_offsets(anchor, 5))

    if transform == "vmap":
        got = jax.vmap(offsets)(anchors)
        assert got.tolist() == [[0, 1, 2, 3, 4]] * 3
    else:
        run = jax.jit(offsets) if transform == "jit" else offsets
        for anchor in anchors:
            got = run(anchor)
            assert got.dtype == jnp.uint32 and got.tolist() == [0, 1, 2, 3, 4]


def test_unstack_at_runtime_offsets_reads_the_same_members():
    stacked = {"a": jnp.arange(24.0).reshape(4, 2, 3), "b": jnp.arange(4)}
    offsets = packing.member_offsets(jnp.ones(1), 4)
    for static, dynamic in zip(packing.unstack(stacked, 4), packing.unstack(stacked, 4, offsets), strict=True):
        assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), static, dynamic))


def _distinct_kernels(tx, params) -> int:
    """Distinct fused computations of a compiled training step (names and metadata left out)."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    text = jax.jit(step).lower(params, tx.init(params), params).compile().as_text()
    text = re.sub(r", metadata=\{[^}]*\}", "", text)
    bodies = [c.split("\n", 1)[1] for c in re.split(r"\n(?=\S)", text) if c.startswith("%fused")]
    return len({re.sub(r"%[\w.\-]+", "%x", body) for body in bodies})


def test_a_packed_step_compiles_one_read_per_member_shape_not_one_per_member():
    """XLA:CPU compiles each distinct kernel once (about 10 ms): reading members at constant offsets
    made one kernel per packed leaf, and real trees compiled slower packed than per leaf."""
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=True)
    shapes = [(32,), (3, 3, 16), (5, 40)]

    def tree(members):
        return {f"{i}-{k}": jnp.full(shape, 0.5) for i, shape in enumerate(shapes) for k in range(members)}

    groups = [len(group) for group in rmsprop_jax.packing_plan(tx.init(tree(9))).groups]
    assert groups == [9, 9, 9]
    assert _distinct_kernels(tx, tree(9)) <= _distinct_kernels(tx, tree(3))
