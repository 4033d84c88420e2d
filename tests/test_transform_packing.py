"""``pack_small_leaves=True``: the same results as per leaf, bit for bit, and the state handled everywhere.

Each run feeds the same gradients to the jitted ``update`` with packing off and on, and
applies its updates outside it. The optimizer's outputs (updates and state) are then equal
bit for bit. Inside one larger jitted program XLA:CPU contracts a multiply and an add that
share a fused kernel into one FMA (the last multiply of an update with ``apply_updates``'
add, or a gradient's producer with coupled weight decay); packing changes which ops share a
kernel, so there the params can differ in the last bit (the docs say so; measured below).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rmsprop_jax
from rmsprop_jax import presets
from rmsprop_jax._state import PackedGroups

SCHEDULE = optax.linear_schedule(1e-2, 1e-3, 6)


def small_tree() -> dict:
    """Several same-shape small leaves per shape (biases, norm scales, small kernels), one large leaf."""
    rng = np.random.default_rng(0)
    shapes = {"b0": (64,), "b1": (64,), "b2": (64,), "s0": (64,), "k0": (8, 16), "k1": (8, 16), "lone": (5,)}
    params = {name: jnp.asarray(rng.standard_normal(shape), jnp.float32) for name, shape in shapes.items()}
    params["big"] = jnp.asarray(rng.standard_normal((160, 128)), jnp.float32)
    return params


def gradients(params: dict, steps: int) -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for t in range(steps):
        scale = 10.0 ** rng.choice([-3, 0, 2])
        out.append(
            {
                k: jnp.asarray(np.where(rng.random(p.shape) < 0.1, 0.0, scale * rng.standard_normal(p.shape)), p.dtype)
                for k, p in params.items()
            }
        )
        out[-1]["b1"] = out[-1]["b1"] * (t % 2)  # a leaf with all-zero gradients every other step
    return out


def run(tx: optax.GradientTransformation, params: dict, steps: int = 6, state=None) -> tuple:
    step = jax.jit(tx.update)
    state = tx.init(params) if state is None else state
    updates = None
    for grads in gradients(params, steps):
        updates, state = step(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)  # eagerly: no fusion
    return params, state, updates


def test_inside_one_jitted_step_the_params_differ_at_most_in_the_last_bits():
    """The fused case the module docstring describes, measured: within 4 ulp of float32."""
    params = small_tree()
    tx_off, tx_on = (rmsprop_jax.scale_by_rms(centered=True, pack_small_leaves=pack) for pack in (False, True))

    def fused(tx: optax.GradientTransformation) -> dict:
        @jax.jit
        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        p, state = params, tx.init(params)
        for grads in gradients(params, 6):
            p, state = step(p, state, grads)
        return p

    off, on = fused(tx_off), fused(tx_on)
    for name in params:
        np.testing.assert_array_max_ulp(np.asarray(off[name]), np.asarray(on[name]), maxulp=4)


def assert_bit_identical(a, b, last_bits: bool = False) -> None:
    """Equal bit for bit; ``last_bits``: within float32 rounding (1e-5 of each leaf's largest entry)."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        if last_bits:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(x), initial=0.0)))
        else:
            np.testing.assert_array_equal(x, y)


def assert_same_run(make, params=None, steps: int = 6, last_bits: bool = False) -> None:
    """Packing off and on give the same params, updates and state (``last_bits``: to float32 rounding)."""
    params = small_tree() if params is None else params
    per_leaf = run(make(False), params, steps)
    packed = run(make(True), params, steps)
    packed_state = jax.tree.leaves(packed[1], is_leaf=lambda x: isinstance(x, rmsprop_jax.RmsPropState))
    assert any(isinstance(s, rmsprop_jax.RmsPropState) and isinstance(s.nu, PackedGroups) for s in packed_state)
    assert_bit_identical(per_leaf[0], packed[0], last_bits)  # params
    assert_bit_identical(per_leaf[2], packed[2], last_bits)  # the last updates
    views = (rmsprop_jax.state_as_float32(per_leaf[1]), rmsprop_jax.state_as_float32(packed[1]))
    assert_bit_identical(*views, last_bits)


VARIANTS = {
    "momentum": {"momentum": 0.9},
    "centered": {"centered": True},
    "centered+momentum": {"centered": True, "momentum": 0.9},
    "nesterov+bias_correction": {"momentum": 0.9, "nesterov": True, "bias_correction": True},
    "eps outside, lr outside momentum": {"momentum": 0.5, "eps_in_sqrt": False, "lr_in_momentum": False},
    "eps=0, maximize": {"momentum": 0.9, "eps": 0.0, "maximize": True},
    "caution": {"momentum": 0.9, "caution": True},
    "initial_scale": {"momentum": 0.9, "initial_scale": 1.0, "centered": True},
    "coupled weight decay, masked": {
        "momentum": 0.9,
        "weight_decay": 1e-2,
        "weight_decay_mask": lambda p: {k: not k.startswith("b") for k in p},
    },
    "decoupled weight decay schedule": {
        "momentum": 0.9,
        "weight_decay": optax.linear_schedule(1e-2, 0.0, 6),
        "decoupled_weight_decay": True,
    },
    "bfloat16 state": {"momentum": 0.9, "centered": True, "state_dtype": "bfloat16"},
    "float16 state": {"momentum": 0.9, "state_dtype": jnp.float16},
    "8bit state": {"momentum": 0.9, "centered": True, "state_dtype": "8bit"},
}


@pytest.mark.parametrize("learning_rate", [1e-2, SCHEDULE], ids=["constant", "schedule"])
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_packed_equals_per_leaf_bit_for_bit(variant, learning_rate):
    """16-bit and 8-bit states too: each member's rounding draws its own leaf's bits (the same seeds)."""
    kwargs = VARIANTS[variant]
    assert_same_run(lambda pack: rmsprop_jax.rmsprop(learning_rate, **kwargs, pack_small_leaves=pack))


def test_packed_equals_per_leaf_for_16_bit_params_to_the_last_bits():
    """Not bit for bit: XLA:CPU contracts ``decay * nu + (1 - decay) * g^2`` into an FMA one way in the
    per-leaf kernel and the other way in the stacked one once the bfloat16 -> float32 converts are
    fused in (measured: 1 ulp of the float32 state, growing to a few ulp of the updates in 6 steps)."""
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), small_tree())
    assert_same_run(
        lambda pack: rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=pack), params, last_bits=True
    )


def test_scale_by_rms_centered_packed_equals_per_leaf():
    assert_same_run(lambda pack: rmsprop_jax.scale_by_rms(centered=True, pack_small_leaves=pack))


PRESETS = {
    "pytorch": lambda pack: presets.pytorch(
        lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-3, pack_small_leaves=pack
    ),
    "keras": lambda pack: presets.keras(learning_rate=1e-2, momentum=0.9, weight_decay=1e-3, pack_small_leaves=pack),
    "tensorflow_v1": lambda pack: presets.tensorflow_v1(1e-2, momentum=0.9, centered=True, pack_small_leaves=pack),
    "timm": lambda pack: presets.timm(
        lr=1e-2, momentum=0.9, weight_decay=1e-3, decoupled_decay=True, pack_small_leaves=pack
    ),
    "graves2013": lambda pack: presets.graves2013(1e-2, pack_small_leaves=pack),
    "dqn2015": lambda pack: presets.dqn2015(1e-2, pack_small_leaves=pack),
}


@pytest.mark.parametrize("preset", PRESETS, ids=str)
def test_presets_packed_equal_per_leaf(preset):
    assert_same_run(PRESETS[preset])


def test_hinton2012_takes_the_option_and_packs_nothing():
    """Plain RMSProp: packing would not pay, so the state stays per leaf."""
    state = presets.hinton2012(1e-2, pack_small_leaves=True).init(small_tree())
    assert set(state.nu) == set(small_tree())


def test_without_packable_leaves_the_compiled_step_is_identical():
    params = [jnp.ones((256, 256)) * i for i in range(4)]

    def hlo(pack: bool) -> str:
        tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, centered=True, pack_small_leaves=pack)
        step = jax.jit(lambda p, s, g: tx.update(g, s, p))
        text = step.lower(params, tx.init(params), params).compile().as_text()
        program = text[text.index("\n%") :]  # the computations, after the source-location tables
        return re.sub(r", metadata=\{[^}]*\}", "", program)

    assert hlo(True) == hlo(False)


def test_state_views_and_conversion_between_layouts():
    params = small_tree()
    per_leaf_tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True)
    packed_tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True, pack_small_leaves=True)
    _, per_leaf_state, _ = run(per_leaf_tx, params, 3)
    _, packed_state, _ = run(packed_tx, params, 3)
    view = rmsprop_jax.state_as_float32(packed_state)
    assert jax.tree.structure(view.nu) == jax.tree.structure(params)
    assert_bit_identical(view, rmsprop_jax.state_as_float32(per_leaf_state))
    # packed -> per leaf, and per leaf -> packed mid-run: the same state, continuing the same way
    to_per_leaf = rmsprop_jax.convert_state(packed_state, per_leaf_tx.init(params))
    assert_bit_identical(to_per_leaf, per_leaf_state)
    to_packed = rmsprop_jax.convert_state(per_leaf_state, packed_tx.init(params))
    assert_bit_identical(to_packed, packed_state)
    assert isinstance(to_packed.nu, PackedGroups) and set(to_packed.nu.stacked) == set(packed_state.nu.stacked)
    # into another storage and layout at once
    eight_bit = rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True, state_dtype="8bit", pack_small_leaves=True)
    converted = rmsprop_jax.convert_state(per_leaf_state, eight_bit.init(params))
    assert jax.tree.structure(converted) == jax.tree.structure(eight_bit.init(params))


def test_gradient_errors_name_the_leaf():
    params = small_tree()
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=True)
    state = tx.init(params)
    wrong_shape = {**params, "b2": jnp.zeros(65)}
    with pytest.raises(ValueError, match=r"Gradient leaf \['b2'\] has shape \(65,\) but its optimizer state has shape"):
        tx.update(wrong_shape, state, params)
    with pytest.raises(ValueError, match="gradient tree does not match"):
        tx.update({k: v for k, v in params.items() if k != "b0"}, state, params)


def test_a_weight_decay_mask_that_changes_after_init_is_refused_by_name():
    params = small_tree()
    flags = {k: True for k in params}
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, weight_decay=1e-2, weight_decay_mask=lambda p: flags)
    state = rmsprop_jax.rmsprop(
        1e-2, momentum=0.9, weight_decay=1e-2, weight_decay_mask=lambda p: flags, pack_small_leaves=True
    ).init(params)
    flags["b1"] = False
    packed_tx = rmsprop_jax.rmsprop(
        1e-2, momentum=0.9, weight_decay=1e-2, weight_decay_mask=lambda p: flags, pack_small_leaves=True
    )
    with pytest.raises(ValueError, match=r"\['b1'\].*mask changed since init"):
        packed_tx.update(params, state, params)
    tx.update(params, tx.init(params), params)  # per leaf, a mask may change


def test_tree_map_params_says_what_to_use_instead():
    params = small_tree()
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=True)
    with pytest.raises(ValueError, match=r"state_as_float32\(state\) instead"):
        optax.tree_map_params(tx, lambda p: p, tx.init(params))
    view = rmsprop_jax.state_as_float32(tx.init(params))
    mapped = optax.tree_map_params(rmsprop_jax.rmsprop(1e-2, momentum=0.9), lambda p: p + 1, view)
    assert float(mapped.nu["b0"][0]) == 1.0


COMPOSED = {
    "chain with clipping": lambda pack: optax.chain(
        optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=pack)
    ),
    "inject_hyperparams": lambda pack: optax.inject_hyperparams(rmsprop_jax.rmsprop)(
        learning_rate=1e-2, momentum=0.9, centered=True, pack_small_leaves=pack
    ),
    "keras clipnorm": lambda pack: presets.keras(
        learning_rate=1e-2, momentum=0.9, clipnorm=1.0, pack_small_leaves=pack
    ),
    "MultiSteps": lambda pack: optax.MultiSteps(rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=pack), 2),
    "apply_if_finite": lambda pack: optax.apply_if_finite(
        rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=pack), 3
    ),
    "masked": lambda pack: optax.masked(
        rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=pack), lambda p: {k: k != "big" for k in p}
    ),
    "multi_transform": lambda pack: optax.multi_transform(
        {
            "small": rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=pack),
            "big": optax.sgd(1e-2),
        },
        lambda p: {k: "big" if k == "big" else "small" for k in p},
    ),
}


MULTIPLY_BEFORE = ("MultiSteps", "keras clipnorm")  # a wrapper's multiply meets our first add in one kernel


@pytest.mark.parametrize("wrapper", COMPOSED, ids=str)
def test_composes_with_optax_wrappers(wrapper):
    """Bit for bit, except where a wrapper multiplies the gradient in the same jitted update (MultiSteps'
    running mean, Keras' per-leaf clipnorm): XLA:CPU may then contract that multiply with our first add
    into an FMA in one layout and not the other (measured: relative differences near 1e-7)."""
    assert_same_run(COMPOSED[wrapper], last_bits=wrapper in MULTIPLY_BEFORE)


def test_inject_hyperparams_keeps_the_option_static_and_steps_under_jit():
    tx = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=1e-2, momentum=0.9, pack_small_leaves=True)
    state = tx.init(small_tree())
    assert isinstance(state.inner_state.nu, PackedGroups)
    assert "pack_small_leaves" not in state.hyperparams


def test_checkpoint_round_trip_and_a_restore_into_another_layout(tmp_path):
    params = small_tree()
    packed_tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, pack_small_leaves=True)
    per_leaf_tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9)
    _, state, _ = run(packed_tx, params, 2)
    rmsprop_jax.checkpoint.save(tmp_path / "packed", state)
    restored = rmsprop_jax.checkpoint.restore(tmp_path / "packed", packed_tx.init(params))
    assert_bit_identical(restored, state)
    with pytest.raises(ValueError, match="packed layout differs") as error:
        rmsprop_jax.checkpoint.restore(tmp_path / "packed", per_leaf_tx.init(params))
    assert "convert_state" in str(error.value)
    # the fix the message names
    converted = rmsprop_jax.convert_state(restored, per_leaf_tx.init(params))
    rmsprop_jax.checkpoint.save(tmp_path / "per_leaf", converted)
    back = rmsprop_jax.checkpoint.restore(tmp_path / "per_leaf", per_leaf_tx.init(params))
    assert_bit_identical(rmsprop_jax.state_as_float32(back), rmsprop_jax.state_as_float32(state))
    with pytest.raises(ValueError, match="packed layout differs"):
        rmsprop_jax.checkpoint.restore(tmp_path / "per_leaf", packed_tx.init(params))


class _Blocks(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(4)])
        self.norms = nnx.List([nnx.LayerNorm(8, rngs=rngs) for _ in range(4)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = norm(jnp.tanh(layer(x)))
        return x


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9}, {"momentum": 0.9, "centered": True}], ids=str)
def test_nnx_optimizer_packed_equals_per_leaf(kwargs):
    x = jnp.linspace(-1, 1, 16).reshape(2, 8)

    def train(pack: bool) -> tuple:
        model = _Blocks(nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-2, **kwargs, pack_small_leaves=pack), wrt=nnx.Param)

        @nnx.jit
        def step(model: _Blocks, optimizer: nnx.Optimizer) -> None:
            optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))

        for _ in range(4):
            step(model, optimizer)
        return nnx.state(model, nnx.Param), optimizer

    per_leaf, _ = train(False)
    packed, optimizer = train(True)
    assert isinstance(optimizer.opt_state.nu, PackedGroups)
    plan = rmsprop_jax.packing_plan(optimizer.opt_state)
    assert max(len(group) for group in plan.groups) == 12  # 4 Linear biases, 4 norm scales, 4 norm biases
    for a, b in zip(jax.tree.leaves(per_leaf), jax.tree.leaves(packed), strict=True):
        assert np.array_equal(a, b)
