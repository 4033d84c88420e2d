"""The state's options object (:mod:`rmsprop_jax._state_options`): validated once, in the caller's names."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import rmsprop_jax
from rmsprop_jax._leaf_update import RmsConfig
from rmsprop_jax._state_options import StateOptions, validated
from rmsprop_jax._transform import build_rmsprop


def test_the_options_are_validated_whole_in_the_callers_names():
    names = {"state_dtype": "dtype", "pack_small_leaves": "pack", "offload_state": "to_host"}
    with pytest.raises(ValueError, match="Invalid dtype value: 'int8'"):
        validated(StateOptions(state_dtype="int8"), names)
    with pytest.raises(ValueError, match="Invalid pack value"):
        validated(StateOptions(pack_small_leaves=1), names)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Invalid to_host\['w'\] value"):
        validated(StateOptions(offload_state={"w": "yes"}), names)
    setup = validated(StateOptions("8bit", True, {"w": True}), names)
    assert setup.state_dtype.value == "8bit" and setup.pack_small_leaves and setup.offload.entries is not None


def test_a_factory_passes_them_on_whole():
    tx = build_rmsprop(RmsConfig(decay=0.9, eps=1e-8), {}, 1e-3, state=StateOptions("bfloat16", False, True))
    state = tx.init({"w": jnp.zeros((4, 4))})
    assert state.nu["w"].dtype == jnp.bfloat16 and state.nu["w"].sharding.memory_kind == "pinned_host"
    default = rmsprop_jax.rmsprop(1e-3).init({"w": jnp.zeros(3)})
    assert default.nu["w"].sharding.memory_kind == "device"
