"""The tools client code carries an optimizer state with, as their own examples use them.

Each case runs the plain configuration, 8-bit + packed and 4-bit + packed (+ centered, momentum),
whose states hold ``Quantized`` and ``Nibbles`` pairs and ``PackedGroups``:

- Flax's msgpack (``flax.serialization.to_bytes`` of a ``TrainState``) and pickle: save, restore
  into a fresh target, resume: the same run as an uninterrupted one, bit for bit.
- Flax NNX's pure dictionaries (Flax's checkpointing guide): ``nnx.to_pure_dict`` of the
  optimizer, ``nnx.replace_by_pure_dict`` into a fresh one, resume.
- ``optax.tree.get`` / ``tree_set`` beside ``optax.contrib.reduce_on_plateau`` (optax's example).
- Equinox's frozen-layer example: ``None`` gradients leave their params and state unchanged.
- optax's meta-learning example as written: ``inject_hyperparams(rmsprop)`` updated without params.
- NetKet's complex RBM with the 8-bit state.
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization
from flax.training import train_state
from helpers import require

import rmsprop_jax

CONFIGS = {
    "plain": {},
    "8bit_packed": {"momentum": 0.9, "centered": True, "state_dtype": "8bit", "pack_small_leaves": True},
    "4bit_packed": {"momentum": 0.9, "centered": True, "state_dtype": "4bit", "pack_small_leaves": True},
}


def _params(seed: int = 0) -> dict:
    """Large leaves (8-bit tiles and runs; h: 4-bit codes paired along its first axis, as a classifier
    with an odd number of classes), small same-shape ones (packed) and a lone one."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (64, 64), "r": (8, 512), "h": (64, 200), "b1": (64,), "b2": (64,), "b3": (64,), "odd": (5, 3)}
    return {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}


def _loss(params: dict, x: jax.Array) -> jax.Array:
    hidden = jnp.tanh(x @ params["w"] + params["b1"] * params["b2"] + params["b3"])
    head = jnp.mean(jnp.tanh(hidden @ params["h"] / 8) ** 2)
    return jnp.mean(hidden**2) + head + jnp.mean(params["r"] ** 2) + jnp.mean(params["odd"] ** 2)


def _batches(steps: int) -> list[jax.Array]:
    rng = np.random.default_rng(1)
    return [jnp.asarray(rng.standard_normal((8, 64)), jnp.float32) for _ in range(steps)]


def _assert_same(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@jax.jit
def _train_step(state: train_state.TrainState, x: jax.Array) -> train_state.TrainState:
    return state.apply_gradients(grads=jax.grad(_loss)(state.params, x))


@pytest.mark.parametrize("config", CONFIGS)
def test_flax_msgpack_save_and_resume_equals_an_uninterrupted_run(config):
    tx = rmsprop_jax.rmsprop(1e-2, **CONFIGS[config])
    batches = _batches(6)
    uninterrupted = train_state.TrainState.create(apply_fn=None, params=_params(), tx=tx)
    for x in batches:
        uninterrupted = _train_step(uninterrupted, x)
    state = train_state.TrainState.create(apply_fn=None, params=_params(), tx=tx)
    for x in batches[:3]:
        state = _train_step(state, x)
    saved = serialization.to_bytes(state)
    target = train_state.TrainState.create(apply_fn=None, params=_params(seed=7), tx=tx)
    resumed = serialization.from_bytes(target, saved)
    for x in batches[3:]:
        resumed = _train_step(resumed, x)
    _assert_same((resumed.params, resumed.opt_state), (uninterrupted.params, uninterrupted.opt_state))
    # the state dict is arrays only: every leaf msgpack writes is an array
    flat = jax.tree.leaves(serialization.to_state_dict(state.opt_state))
    assert flat and all(isinstance(leaf, jax.Array) for leaf in flat)
    if config == "4bit_packed":  # h's codes: its 64 rows halved, then the unit axis saying so
        pairs = jax.tree.leaves(resumed.opt_state, is_leaf=lambda x: isinstance(x, rmsprop_jax.Nibbles))
        assert (32, 200, 1) in [pair.nibbles.shape for pair in pairs if isinstance(pair, rmsprop_jax.Nibbles)]


@pytest.mark.parametrize("config", CONFIGS)
def test_flax_training_checkpoints_without_orbax_round_trip(config, tmp_path):
    """``flax.training.checkpoints`` with Orbax turned off writes ``to_state_dict`` with msgpack."""
    import flax
    from flax.training import checkpoints

    tx = rmsprop_jax.rmsprop(1e-2, **CONFIGS[config])
    params = _params()
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jax.grad(_loss)(params, _batches(1)[0]), state, params)
    previous = flax.config.flax_use_orbax_checkpointing
    flax.config.update("flax_use_orbax_checkpointing", False)
    try:
        checkpoints.save_checkpoint(tmp_path, {"params": params, "opt_state": state}, step=1)
        restored = checkpoints.restore_checkpoint(tmp_path, {"params": params, "opt_state": tx.init(params)})
    finally:
        flax.config.update("flax_use_orbax_checkpointing", previous)
    _assert_same(restored["opt_state"], state)


@pytest.mark.parametrize("config", CONFIGS)
def test_pickle_round_trip_resumes_the_same_run(config):
    tx = rmsprop_jax.rmsprop(1e-2, **CONFIGS[config])
    params = _params()
    state = tx.init(params)
    step = jax.jit(lambda p, s, x: tx.update(jax.grad(_loss)(p, x), s, p))
    for x in _batches(2):
        updates, state = step(params, state, x)
        params = optax.apply_updates(params, updates)
    restored = pickle.loads(pickle.dumps(state))
    x = _batches(3)[2]
    _assert_same(step(params, restored, x), step(params, state, x))


@pytest.mark.parametrize("config", CONFIGS)
def test_tree_get_finds_reduce_on_plateaus_scale_alone(config):
    """optax's reduce_on_plateau example reads its scale with ``optax.tree.get(state, "scale")``."""
    tx = optax.chain(rmsprop_jax.rmsprop(1e-2, **CONFIGS[config]), optax.contrib.reduce_on_plateau(patience=1))
    params = _params()
    state = tx.init(params)
    _updates, state = jax.jit(tx.update)(jax.grad(_loss)(params, _batches(1)[0]), state, params, value=1.0)
    assert float(optax.tree.get(state, "scale")) == 1.0
    halved = optax.tree.set(state, scale=jnp.asarray(0.5))
    assert float(optax.tree.get(halved, "scale")) == 0.5


class _Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.a = nnx.Linear(64, 128, rngs=rngs)
        self.b = nnx.Linear(128, 64, rngs=rngs)
        self.n1 = nnx.LayerNorm(128, rngs=rngs)
        self.n2 = nnx.LayerNorm(64, rngs=rngs)
        self.h = nnx.Linear(64, 200, rngs=rngs)  # 4-bit: paired along its 64 inputs

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.h(self.n2(self.b(self.n1(self.a(x)))))


@nnx.jit
def _nnx_step(model: _Model, optimizer: nnx.Optimizer, x: jax.Array) -> None:
    optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))


@pytest.mark.parametrize("config", CONFIGS)
def test_nnx_pure_dict_save_and_restore_resumes_the_same_run(config):
    """Flax's checkpointing guide: ``nnx.to_pure_dict(nnx.state(...))``, then
    ``nnx.replace_by_pure_dict`` into an abstract state and ``nnx.update``."""
    kwargs = CONFIGS[config]
    batches = _batches(4)
    model = _Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-2, **kwargs), wrt=nnx.Param)
    for x in batches[:2]:
        _nnx_step(model, optimizer, x)
    pure = nnx.to_pure_dict(nnx.state((model, optimizer)))
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(pure))
    fresh_model = _Model(nnx.Rngs(5))
    fresh = nnx.Optimizer(fresh_model, rmsprop_jax.rmsprop(1e-2, **kwargs), wrt=nnx.Param)
    abstract = nnx.state((fresh_model, fresh))
    nnx.replace_by_pure_dict(abstract, pure)
    nnx.update((fresh_model, fresh), abstract)
    for x in batches[2:]:
        _nnx_step(model, optimizer, x)
        _nnx_step(fresh_model, fresh, x)
    _assert_same(nnx.to_pure_dict(nnx.state((fresh_model, fresh))), nnx.to_pure_dict(nnx.state((model, optimizer))))


@pytest.mark.parametrize("config", CONFIGS)
def test_equinox_frozen_layer_keeps_its_params_and_state(config):
    """Equinox's frozen-layer example: ``optim.init(eqx.filter(model, eqx.is_array))``, gradients
    of the trainable part only, ``None`` for the frozen last layer."""
    eqx = require("equinox")
    model = eqx.nn.MLP(in_size=2, out_size=1, width_size=64, depth=2, key=jax.random.key(0))
    filter_spec = jax.tree.map(lambda _: False, model)
    filter_spec = eqx.tree_at(
        lambda tree: (tree.layers[0].weight, tree.layers[0].bias, tree.layers[1].weight, tree.layers[1].bias),
        filter_spec,
        replace=(True, True, True, True),
    )
    x = jax.random.normal(jax.random.key(1), (32, 2))
    y = jnp.sin(x[:, :1])

    @eqx.filter_value_and_grad
    def compute_loss(diff_model, static_model, x, y):
        model = eqx.combine(diff_model, static_model)
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    def train(optim):
        current = model
        opt_state = optim.init(eqx.filter(current, eqx.is_array))

        @eqx.filter_jit
        def make_step(model, opt_state):
            diff_model, static_model = eqx.partition(model, filter_spec)
            loss, grads = compute_loss(diff_model, static_model, x, y)
            updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
            return loss, eqx.apply_updates(model, updates), opt_state, updates

        for _ in range(3):
            _loss_value, current, opt_state, updates = make_step(current, opt_state)
        return current, opt_state, updates

    trained, state, updates = train(rmsprop_jax.rmsprop(1e-2, **CONFIGS[config]))
    assert updates.layers[2].weight is None and updates.layers[2].bias is None
    np.testing.assert_array_equal(trained.layers[2].weight, model.layers[2].weight)
    assert not np.array_equal(trained.layers[0].weight, model.layers[0].weight)
    fresh = rmsprop_jax.rmsprop(1e-2, **CONFIGS[config]).init(eqx.filter(model, eqx.is_array))
    frozen = rmsprop_jax.state_as_float32(state).nu.layers[2]
    _assert_same(frozen, rmsprop_jax.state_as_float32(fresh).nu.layers[2])
    if config == "plain":  # optax.rmsprop in the same code: the same trained layers
        reference, _, _ = train(optax.rmsprop(1e-2))
        for ours, theirs in zip(jax.tree.leaves(eqx.filter(trained, eqx.is_array)),
                                jax.tree.leaves(eqx.filter(reference, eqx.is_array)), strict=True):  # fmt: skip
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def _meta_learning(factory, steps: int = 6, **kwargs) -> jax.Array:
    """optax's meta-learning example, as written: the inner optimizer is updated without params."""

    def loss_fn(params, data):
        x, y = data
        return optax.l2_loss(x @ params["w"] + params["b"], y).mean()

    optimizer = optax.inject_hyperparams(factory)(learning_rate=jax.nn.sigmoid(jnp.asarray(-2.0)), **kwargs)
    meta_optimizer = optax.adam(learning_rate=0.03)

    def step(params, state, data):
        grad = jax.grad(loss_fn)(params, data)
        updates, state = optimizer.update(grad, state)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def outer_loss(eta, params, state, samples):
        state.hyperparams["learning_rate"] = jax.nn.sigmoid(eta)
        for data in samples[:-1]:
            params, state = step(params, state, data)
        return loss_fn(params, samples[-1]), (params, state)

    @jax.jit
    def outer_step(eta, params, meta_state, state, samples):
        grad, (params, state) = jax.grad(outer_loss, has_aux=True)(eta, params, state, samples)
        meta_updates, meta_state = meta_optimizer.update(grad, meta_state)
        return optax.apply_updates(eta, meta_updates), params, meta_state, state

    rng = np.random.default_rng(0)
    true_w = rng.standard_normal((64, 64)).astype(np.float32)
    params = {"w": jnp.zeros((64, 64)), "b": jnp.zeros(64)}
    eta = jnp.asarray(-2.0)
    state, meta_state = optimizer.init(params), meta_optimizer.init(eta)
    for _ in range(steps):
        xs = [jnp.asarray(rng.standard_normal((16, 64)), jnp.float32) for _ in range(4)]
        samples = [(x, x @ true_w) for x in xs]
        eta, params, meta_state, state = outer_step(eta, params, meta_state, state, samples)
    return eta


@pytest.mark.parametrize("config", CONFIGS)
def test_optax_meta_learning_example_runs_as_written(config):
    eta = _meta_learning(rmsprop_jax.rmsprop, **CONFIGS[config])  # every numeric default injected
    assert np.isfinite(eta) and float(eta) != -2.0
    if config == "plain":
        np.testing.assert_allclose(eta, _meta_learning(optax.rmsprop), rtol=1e-5)


def test_inject_hyperparams_with_a_nonzero_weight_decay_asks_for_the_params():
    tx = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=0.1, weight_decay=0.01)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"weight_decay needs the params: call update\(grads, state, params\)"):
        tx.update(params, state)
    with pytest.raises(Exception, match=r"weight_decay needs the params"):  # inside jit: raised as the step runs
        jax.block_until_ready(jax.jit(tx.update)(params, state))
    zero = optax.inject_hyperparams(rmsprop_jax.rmsprop)(learning_rate=0.1)
    updates, _ = jax.jit(zero.update)(params, zero.init(params))  # weight_decay 0: no params needed
    assert np.all(np.isfinite(updates["w"]))


def test_netkets_complex_rbm_takes_the_8bit_state():
    """NetKet's RBM has complex visible and hidden biases and weights; all under 4096 entries."""
    rng = np.random.default_rng(0)
    params = {
        "visible_bias": jnp.asarray(rng.standard_normal(16) + 1j * rng.standard_normal(16), jnp.complex64),
        "Dense": {
            "kernel": jnp.asarray(rng.standard_normal((16, 32)) + 1j * rng.standard_normal((16, 32)), jnp.complex64),
            "bias": jnp.asarray(rng.standard_normal(32) + 1j * rng.standard_normal(32), jnp.complex64),
        },
    }
    grads = jax.tree.map(lambda p: 0.1 * p.conj(), params)
    float_tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9)
    eight_tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit", pack_small_leaves=True)
    expected, _ = float_tx.update(grads, float_tx.init(params), params)
    got, _ = jax.jit(eight_tx.update)(grads, eight_tx.init(params), params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
