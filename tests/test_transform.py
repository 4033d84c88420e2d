"""rmsprop / scale_by_rms: optax parity, API shape, state layout, tree checks."""

from __future__ import annotations

import inspect
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import hard_gradients

import rmsprop_jax
from rmsprop_jax import RmsPropState

OPTAX_FLAGS = list(
    itertools.product(
        [True, False],  # eps_in_sqrt
        [False, True],  # centered
        [None, 0.9, "nesterov"],  # momentum
        [False, True],  # bias_correction
        [False, True],  # schedule
    )
)


def _optax_kwargs(eps_in_sqrt, centered, momentum, bias_correction, schedule, tiny=False):
    return {
        "learning_rate": optax.cosine_decay_schedule(0.05, 60, alpha=0.1) if schedule else 0.05,
        "decay": 0.95,
        "eps": 1e-7,
        "initial_scale": 0.0 if tiny else 0.25,
        "eps_in_sqrt": eps_in_sqrt,
        "centered": centered,
        "momentum": None if momentum is None else 0.9,
        "nesterov": momentum == "nesterov",
        "bias_correction": bias_correction,
    }


def _tree_of(grad: np.ndarray) -> dict:
    return {"w": jnp.asarray(grad), "b": [jnp.asarray(grad[0]), None]}


def _update_sequence(tx, grads, params):
    state, update = tx.init(params), jax.jit(tx.update)
    out = []
    for g in grads:
        updates, state = update(_tree_of(g), state, params)
        out.append([np.asarray(leaf) for leaf in jax.tree.leaves(updates)])
    return out


def _max_error(ours, theirs):
    """The largest per-step, per-leaf error relative to that leaf's largest update (optax's NaN skipped)."""
    worst = 0.0
    for step_ours, step_theirs in zip(ours, theirs, strict=True):
        for a, b in zip(step_ours, step_theirs, strict=True):
            finite = np.isfinite(b)  # optax's NaN (negative centered variance) is a documented deviation
            assert np.all(np.isfinite(a)) and a.dtype == b.dtype == np.float32
            scale = np.abs(b[finite]).max(initial=0.0)
            worst = max(worst, np.abs(a[finite] - b[finite]).max(initial=0.0) / max(scale, 1e-38))
    return worst


@pytest.mark.parametrize("gradients", ["hard", "tiny"])
@pytest.mark.parametrize("flags", OPTAX_FLAGS, ids=lambda f: "-".join(map(str, f)))
def test_reproduces_optax_rmsprop_every_step(flags, gradients):
    """Updates equal optax's at every step. "tiny": gradients of 1e-12 to 1e-6 from a zero
    average, where eps = 1e-7 decides the step, so its placement is tested too."""
    tiny = gradients == "tiny"
    kwargs = _optax_kwargs(*flags, tiny=tiny)
    grads = [g * 1e-9 if tiny else g for g in hard_gradients(60, (8, 3), seed=7)]
    params = _tree_of(np.ones((8, 3), np.float32))
    theirs = _update_sequence(optax.rmsprop(**kwargs), grads, params)
    assert _max_error(_update_sequence(rmsprop_jax.rmsprop(**kwargs), grads, params), theirs) <= 1e-5
    if tiny:  # the comparison can fail: eps on the other side of the root is far off
        flipped = rmsprop_jax.rmsprop(**{**kwargs, "eps_in_sqrt": not kwargs["eps_in_sqrt"]})
        assert _max_error(_update_sequence(flipped, grads, params), theirs) > 1e-2


@pytest.mark.parametrize("name", ["rmsprop", "scale_by_rms"])
def test_signature_is_a_superset_of_optax_with_same_positions_and_defaults(name):
    ours = inspect.signature(getattr(rmsprop_jax, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    for position, (argument, parameter) in enumerate(theirs.items()):
        assert list(ours)[position] == argument
        assert ours[argument].default == parameter.default
        assert ours[argument].kind == parameter.kind
    for argument, parameter in ours.items():
        if argument not in theirs:
            assert parameter.kind == inspect.Parameter.KEYWORD_ONLY, argument


def _assert_same_updates(tx_a, tx_b, steps: int, seed: int) -> None:
    """Both transformations, stepped on the same hard gradients from zero params, give the same updates."""
    params = jnp.zeros(5)
    state_a, state_b = tx_a.init(params), tx_b.init(params)
    for g in hard_gradients(steps, (5,), seed=seed):
        u_a, state_a = tx_a.update(jnp.asarray(g), state_a, params)
        u_b, state_b = tx_b.update(jnp.asarray(g), state_b, params)
        np.testing.assert_allclose(u_a, u_b, rtol=2e-6, atol=1e-30)


def test_scale_by_rms_called_positionally_as_optax_is_steps_as_optax_does():
    """optax.scale_by_rms(decay, eps, initial_scale, eps_in_sqrt, bias_correction): the fifth is bias correction."""
    ours, theirs = rmsprop_jax.scale_by_rms(0.8, 1e-6, 0.0, True, True), optax.scale_by_rms(0.8, 1e-6, 0.0, True, True)
    _assert_same_updates(ours, theirs, steps=10, seed=4)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [None, 0.8])
def test_rmsprop_equals_the_scale_by_rms_chain(centered, momentum):
    schedule = optax.linear_schedule(0.1, 0.01, 30)
    flags = {"decay": 0.8, "eps": 1e-6, "initial_scale": 0.1, "centered": centered, "bias_correction": True}
    fused = rmsprop_jax.rmsprop(schedule, momentum=momentum, **flags)
    chained = optax.chain(
        rmsprop_jax.scale_by_rms(**flags),
        optax.scale_by_learning_rate(schedule),
        optax.trace(momentum) if momentum is not None else optax.identity(),
    )
    _assert_same_updates(fused, chained, steps=30, seed=2)


def test_scale_by_rms_in_the_documented_chain_with_clipping_and_schedule():
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        rmsprop_jax.scale_by_rms(decay=0.9),
        optax.scale_by_learning_rate(optax.linear_schedule(0.1, 0.0, 10)),
    )
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
    state = tx.init(params)
    grads = jax.tree.map(lambda p: 100.0 * p, params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    # The clipped gradient has norm 1; one RMS step maps each entry to -lr * sign(g) / sqrt(1 - decay).
    expected = -0.1 / np.sqrt(0.1)
    for leaf in jax.tree.leaves(updates):
        np.testing.assert_allclose(leaf, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "count", "mu", "trace"),
    [
        ({}, False, False, False),
        ({"centered": True}, False, True, False),
        ({"momentum": 0.9}, False, False, True),
        ({"bias_correction": True}, True, False, False),
        ({"learning_rate": optax.constant_schedule(0.1)}, True, False, False),
        ({"state_dtype": "bfloat16"}, True, False, False),
    ],
)
def test_state_holds_only_what_the_configuration_needs(kwargs, count, mu, trace):
    kwargs = {"learning_rate": 0.1, **kwargs}
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2), "none": None}
    state = rmsprop_jax.rmsprop(**kwargs).init(params)
    assert isinstance(state, RmsPropState)
    assert (state.count is not None) == count
    assert (state.mu is not None) == mu
    assert (state.trace is not None) == trace
    chex.assert_trees_all_equal_shapes(state.nu, params)
    if count:
        chex.assert_shape(state.count, ())
        chex.assert_type(state.count, jnp.int32)
    for moment in (state.mu, state.trace):
        if moment is not None:
            chex.assert_trees_all_equal_shapes(moment, params)


def test_initial_scale_fills_nu_and_moments_start_at_zero():
    state = rmsprop_jax.rmsprop(0.1, initial_scale=1.0, centered=True, momentum=0.5).init(jnp.ones(4))
    np.testing.assert_array_equal(state.nu, 1.0)
    np.testing.assert_array_equal(state.mu, 0.0)
    np.testing.assert_array_equal(state.trace, 0.0)


def test_count_advances_and_feeds_the_schedule():
    tx = rmsprop_jax.rmsprop(lambda count: 0.1 * (count + 1), decay=0.0, eps=0.0)
    params = jnp.zeros(2)
    state = tx.init(params)
    for expected_lr in (0.1, 0.2, 0.3):
        updates, state = tx.update(jnp.ones(2), state, params)
        # decay 0 and eps 0: the scaled gradient is sign(g), so the update is -lr.
        np.testing.assert_allclose(updates, -expected_lr, rtol=1e-6)
    assert int(state.count) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"centered": True, "momentum": 0.9, "nesterov": True},
        # Not with centered: there step 1's variance is 0 in exact arithmetic and pure rounding noise in float32.
        {"bias_correction": True, "momentum": 0.9, "lr_in_momentum": False, "eps_in_sqrt": False},
    ],
)
def test_jit_equals_eager(kwargs):
    tx = rmsprop_jax.rmsprop(optax.exponential_decay(0.1, 3, 0.5), weight_decay=0.01, **kwargs)
    params = {"a": jnp.arange(4.0), "b": (jnp.ones((2, 3)),)}
    eager_state = jit_state = tx.init(params)
    jitted = jax.jit(tx.update)
    for g in hard_gradients(8, (4,), seed=5):
        grads = {"a": jnp.asarray(g), "b": (jnp.full((2, 3), g[0]),)}
        u_eager, eager_state = tx.update(grads, eager_state, params)
        u_jit, jit_state = jitted(grads, jit_state, params)
        for a, b in zip(jax.tree.leaves(u_eager), jax.tree.leaves(u_jit), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(a).max())
    for a, b in zip(jax.tree.leaves(eager_state), jax.tree.leaves(jit_state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max())


def test_update_accepts_extra_args():
    tx = rmsprop_jax.rmsprop(0.1)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = jnp.ones(3)
    updates, _ = tx.update(jnp.ones(3), tx.init(params), params, value=jnp.asarray(1.0), grad=None)
    assert updates.shape == (3,)


def test_state_is_a_plain_pytree_for_vmap():
    tx = rmsprop_jax.rmsprop(0.1, centered=True, momentum=0.9)
    params = jnp.ones((4, 3))  # four independent problems
    states = jax.vmap(tx.init)(params)
    grads = jnp.arange(12.0).reshape(4, 3)
    updates, states = jax.vmap(tx.update)(grads, states, params)
    for row in range(4):
        single, _ = tx.update(grads[row], tx.init(params[row]), params[row])
        np.testing.assert_allclose(updates[row], single, rtol=1e-6)
    assert states.nu.shape == (4, 3)


@pytest.mark.parametrize("packed", [False, True])
def test_structure_mismatch_is_reported_not_broadcast(packed):
    tx = rmsprop_jax.rmsprop(0.1, momentum=0.9, pack_small_leaves=packed)
    params = {"a": jnp.ones(3), "b": jnp.ones(2), "c": jnp.ones(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"gradient tree does not match.*the state has leaf \['c'\], which it lacks"):
        tx.update({"a": jnp.ones(3), "b": jnp.ones(2)}, state, params)
    with pytest.raises(ValueError, match=r"gradient tree does not match.*leaf \['c'\] where it has \['d'\]"):
        tx.update({"a": jnp.ones(3), "b": jnp.ones(2), "d": jnp.ones(2)}, state, params)
    with pytest.raises(ValueError, match="gradient tree does not match"):
        tx.update({"a": jnp.ones(3), "b": jnp.ones(2), "c": {"x": jnp.ones(2), "y": jnp.ones(2)}}, state, params)
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    state = rmsprop_jax.rmsprop(0.1).init(params)
    tx = rmsprop_jax.rmsprop(0.1)
    with pytest.raises(ValueError, match=r"\['b'\] has shape \(1,\).*state has shape \(2,\)"):
        tx.update({"a": jnp.ones(3), "b": jnp.ones(1)}, state, params)
    with pytest.raises(ValueError, match="shape"):
        tx.update(jnp.ones(3), tx.init(jnp.ones(())), None)


def test_params_tree_mismatch_is_reported_with_weight_decay():
    tx = rmsprop_jax.rmsprop(0.1, weight_decay=0.1)
    params = {"a": jnp.ones(3)}
    with pytest.raises(ValueError, match="params tree does not match"):
        tx.update(params, tx.init(params), {"z": jnp.ones(3)})
    with pytest.raises(ValueError, match="weight_decay needs the params"):
        tx.update(params, tx.init(params))
    # params are checked against the state as gradients are: nu never changes shape
    params = {"a": jnp.ones(5)}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"Params leaf \['a'\] has shape \(1, 5\).*state has shape \(5,\)"):
        jax.jit(tx.update)(params, state, {"a": jnp.ones((1, 5))})
    with pytest.raises(ValueError, match=r"Params leaf \['a'\] has shape \(1,\)"):
        tx.update(params, state, {"a": jnp.ones(1)})


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"centered": True}], ids=["plain", "momentum", "centered"])
def test_gradients_of_the_wrong_kind_are_refused_naming_the_leaf(kwargs):
    tx = rmsprop_jax.rmsprop(0.1, **kwargs)
    params = {"w": jnp.ones(3), "k": jnp.ones(2)}
    state = tx.init(params)
    for dtype in (jnp.int32, jnp.bool_):
        with pytest.raises(TypeError, match=rf"Gradient leaf \['k'\] has dtype {jnp.dtype(dtype).name}"):
            tx.update({"w": jnp.ones(3), "k": jnp.ones(2, dtype)}, state, params)
    complex_grads = {"w": jnp.ones(3), "k": jnp.ones(2, jnp.complex64)}
    with pytest.raises(TypeError, match=r"Gradient leaf \['k'\] is complex \(complex64\) but its param is real"):
        jax.jit(tx.update)(complex_grads, state, params)


def test_a_state_of_another_configuration_is_refused():
    params = {"w": jnp.ones((64, 64))}
    eight = rmsprop_jax.rmsprop(0.1, state_dtype="8bit").init(params)
    with pytest.raises(ValueError, match=r"keeps leaf \['w'\] in 8 bits.*state_dtype"):
        rmsprop_jax.rmsprop(0.1).update(params, eight._replace(count=None), params)
    with pytest.raises(ValueError, match="built by another configuration"):
        rmsprop_jax.rmsprop(0.1, momentum=0.9).update(params, rmsprop_jax.rmsprop(0.1).init(params), params)
    float_state = rmsprop_jax.rmsprop(0.1, state_dtype="bfloat16").init(params)
    with pytest.raises(ValueError, match=r"keeps leaf \['w'\] in bfloat16.*float16"):
        rmsprop_jax.rmsprop(0.1, state_dtype="float16").update(params, float_state, params)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": 0.9, "centered": True, "state_dtype": "8bit", "pack_small_leaves": True}],
    ids=["plain", "8bit_packed"],
)
def test_init_names_a_leaf_that_is_not_a_floating_array(kwargs):
    tx = rmsprop_jax.rmsprop(0.1, **kwargs)
    with pytest.raises(TypeError, match=r"Params leaf \['act'\] is a function, not an array.*eqx.filter"):
        tx.init({"w": jnp.ones(3), "act": jax.nn.relu})
    for value, dtype in ((jnp.ones(3, jnp.int32), "int32"), (jnp.ones(3, bool), "bool")):
        with pytest.raises(TypeError, match=rf"Params leaf \['n'\] has dtype {dtype}"):
            tx.init({"w": jnp.ones(3), "n": value})
    # a Python float is a float32 scalar, as optax.rmsprop reads it
    params = {"w": jnp.ones(3), "s": 2.0}
    updates, _ = tx.update({"w": jnp.ones(3), "s": 0.5}, tx.init(params), params)
    reference = optax.rmsprop(0.1, **{k: v for k, v in kwargs.items() if k in ("momentum", "centered")})
    expected, _ = reference.update({"w": jnp.ones(3), "s": 0.5}, reference.init(params), params)
    np.testing.assert_allclose(updates["s"], expected["s"], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"momentum": 0.9, "centered": True, "state_dtype": "8bit", "pack_small_leaves": True}],
    ids=["plain", "8bit_packed"],
)
def test_none_gradients_leave_their_params_and_state_unchanged(kwargs):
    params = {"w": jnp.ones((64, 64)), "b1": jnp.ones(8), "b2": jnp.ones(8), "b3": jnp.ones(8)}
    tx = rmsprop_jax.rmsprop(0.1, **kwargs)
    state = tx.init(params)
    grads = {"w": None, "b1": jnp.full(8, 0.5), "b2": None, "b3": jnp.full(8, -0.5)}
    updates, new_state = jax.jit(tx.update)(grads, state, params)
    assert updates["w"] is None and updates["b2"] is None
    before, after = rmsprop_jax.state_as_float32(state), rmsprop_jax.state_as_float32(new_state)
    for name in ("w", "b2"):
        np.testing.assert_array_equal(after.nu[name], before.nu[name])
    assert not np.array_equal(after.nu["b1"], before.nu["b1"])
    # the others step as they would alone
    alone = {"b1": jnp.ones(8), "b3": jnp.ones(8)}
    solo = rmsprop_jax.rmsprop(0.1, **{k: v for k, v in kwargs.items() if k != "state_dtype"})
    expected, _ = solo.update({"b1": grads["b1"], "b3": grads["b3"]}, solo.init(alone), alone)
    np.testing.assert_allclose(updates["b1"], expected["b1"], rtol=1e-6)
    np.testing.assert_allclose(updates["b3"], expected["b3"], rtol=1e-6)


def test_weight_decay_mask_pytree_prefix_and_callable():
    params = {"w": jnp.ones(3), "bias": {"b": jnp.ones(2)}}
    grads = jax.tree.map(jnp.zeros_like, params)
    full = {"w": True, "bias": {"b": False}}
    prefix = {"w": True, "bias": False}

    def callable_mask(tree):
        return {"w": True, "bias": jax.tree.map(lambda _: False, tree["bias"])}

    for mask in (full, prefix, callable_mask):
        tx = rmsprop_jax.rmsprop(0.1, weight_decay=0.5, decoupled_weight_decay=True, weight_decay_mask=mask)
        updates, _ = tx.update(grads, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], -0.05)
        np.testing.assert_allclose(updates["bias"]["b"], 0.0)
    with pytest.raises(ValueError, match="weight_decay_mask"):
        tx = rmsprop_jax.rmsprop(0.1, weight_decay=0.5, weight_decay_mask={"w": True, "x": False})
        tx.update(grads, tx.init(params), params)


def test_none_leaves_scalars_and_empty_arrays():
    params = {"none": None, "scalar": jnp.asarray(2.0), "empty": jnp.zeros((0, 3)), "x": [jnp.ones(2)]}
    tx = rmsprop_jax.rmsprop(0.1, centered=True, momentum=0.9, weight_decay=0.1)
    state = tx.init(params)
    grads = jax.tree.map(lambda p: p * 0.5, params)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    assert updates["none"] is None
    assert updates["empty"].shape == (0, 3)
    assert updates["scalar"].shape == ()
