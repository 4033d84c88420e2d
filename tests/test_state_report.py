"""rmsprop_jax.state_report: per leaf, how the state is kept and why, and its bytes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import ROOT

import rmsprop_jax
from rmsprop_jax import presets

DQN = {  # PureJaxRL's CartPole Q-network, 4-120-84-2, as flax.linen names it
    "Dense_0": {"kernel": jnp.zeros((4, 120)), "bias": jnp.zeros(120)},
    "Dense_1": {"kernel": jnp.zeros((120, 84)), "bias": jnp.zeros(84)},
    "Dense_2": {"kernel": jnp.zeros((84, 2)), "bias": jnp.zeros(2)},
}


def _array_bytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def test_the_dqn_network_reports_its_120x84_layer_8bit_and_why_nothing_else_is():
    """The issue's case: 8-bit and packing asked for. The 120 x 84 layer is 8-bit (boxes of 5 x 21,
    which every even sharding of either axis up to 8 ways keeps whole); every other leaf is under 4096
    entries, and no two leaves share a shape."""
    tx = presets.dqn2015(state_dtype="8bit", pack_small_leaves=True)
    report = rmsprop_jax.state_report(tx.init(DQN))
    by_path = {leaf.path: leaf for leaf in report.leaves}
    kernel = by_path["['Dense_1']['kernel']"]
    assert (kernel.storage, kernel.eight_bit) == ("8bit boxes of 5x21", "yes")
    assert all(leaf.storage == "float32" for leaf in report.leaves if leaf is not kernel)
    assert by_path["['Dense_0']['kernel']"].eight_bit == "no: 480 entries < 4096"
    assert kernel.packing == "per leaf: 8-bit codes"
    assert by_path["['Dense_0']['bias']"].packing == "per leaf: no other leaf of its shape and dtype"
    float_entries = 10934 - 10080  # nu and mu in float32; the kernel's in codes and a scale per 105 entries
    state_bytes = 8 * float_entries + 2 * (10080 + 4 * 10080 // 105) + 4  # and the count
    assert report.bytes_per_param == pytest.approx(state_bytes / 10934, abs=1e-6)
    assert "92.2% of the params 8-bit, 0 leaves packed" in str(report)


@pytest.mark.parametrize(
    "tx",
    [
        rmsprop_jax.rmsprop(1e-3),
        rmsprop_jax.rmsprop(1e-3, momentum=0.9, centered=True, pack_small_leaves=True),
        rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit", pack_small_leaves=True),
        rmsprop_jax.rmsprop(1e-3, centered=True, state_dtype="bfloat16"),
        optax.chain(optax.clip_by_global_norm(1.0), presets.timm(momentum=0.9, pack_small_leaves=True)),
    ],
    ids=["plain", "packed", "8bit_packed", "bfloat16", "chain"],
)
def test_bytes_add_up_to_the_state_arrays_and_abstract_states_report_the_same(tx):
    params = {
        "a": {"kernel": jnp.ones((64, 64)), "bias": jnp.ones(64)},
        "b": {"kernel": jnp.ones((64, 64)), "bias": jnp.ones(64)},
        "head": jnp.ones((30, 7)),
    }
    state = tx.init(params)
    report = rmsprop_jax.state_report(state)
    (rms,) = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, rmsprop_jax.RmsPropState))
              if isinstance(s, rmsprop_jax.RmsPropState)]  # fmt: skip
    assert report.state_bytes == _array_bytes(rms)
    assert report.param_entries == sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    assert sum(leaf.state_bytes for leaf in report.leaves) + _array_bytes(rms.count) == report.state_bytes
    assert rmsprop_jax.state_report(jax.eval_shape(tx.init, params)) == report
    assert tuple(leaf.path for leaf in report.leaves) == rmsprop_jax.packing_plan(state).paths


def test_each_reason_is_the_rule_that_decided_it():
    params = {"big": jnp.ones((128, 256)), "odd": jnp.ones((100, 100)), "b1": jnp.ones(32), "b2": jnp.ones(32)}
    per_leaf = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3, momentum=0.9).init(params))
    by_path = {leaf.path: leaf for leaf in per_leaf.leaves}
    assert by_path["['big']"].eight_bit == "no: not requested (tiles fit)"
    assert by_path["['b1']"].packing == "per leaf: not requested (packs with 1 other)"
    assert by_path["['big']"].packing == "per leaf: 32768 entries > 16384 (momentum)"
    eight = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype="8bit").init(params))
    by_path = {leaf.path: leaf for leaf in eight.leaves}
    assert (by_path["['big']"].storage, by_path["['big']"].eight_bit) == ("8bit tiles", "yes")
    assert by_path["['big']"].packing == "per leaf: 8-bit codes"
    assert by_path["['odd']"].eight_bit == "yes"
    runs = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3, state_dtype="8bit").init({"r": jnp.ones((3, 4096))}))
    assert runs.leaves[0].storage == "8bit runs"
    assert runs.leaves[0].packing == "per leaf: 8-bit codes"
    plain = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3).init(params))
    assert {leaf.packing for leaf in plain.leaves} == {"per leaf: plain RMSProp never packs"}
    packed = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True).init(params))
    assert {leaf.path: leaf.packing for leaf in packed.leaves}["['b2']"] == "group 0 (2 leaves)"


def test_a_state_without_exactly_one_rmsprop_state_is_refused():
    with pytest.raises(
        ValueError, match="state_report needs a state holding exactly one RmsPropState; this one holds 0"
    ):
        rmsprop_jax.state_report(optax.adam(1e-3).init(DQN))
    two = optax.chain(rmsprop_jax.rmsprop(1e-3), rmsprop_jax.rmsprop(1e-3)).init(DQN)
    with pytest.raises(ValueError, match="holds 2"):
        rmsprop_jax.state_report(two)


def test_the_reinforcement_learning_page_shows_the_dqn_networks_report():
    page = (ROOT / "docs" / "reinforcement_learning.md").read_text()
    shown = page.split("```text\n", 1)[1].split("```", 1)[0].rstrip("\n")
    tx = presets.dqn2015(state_dtype="8bit", pack_small_leaves=True)
    assert shown == str(rmsprop_jax.state_report(jax.eval_shape(tx.init, DQN)))
