"""Client code as it is written in the wild, with rmsprop_jax dropped in.

- PureJaxRL: ``make_train(config)`` returns ``train(rng)``, which builds its optimizer inside
  and runs under ``jax.jit(jax.vmap(train))`` over seeds.
- optax's meta-learning example: the loss after a few inner steps is differentiated with
  respect to an injected learning rate, and an outer optimizer tunes it.
- Flax NNX: model and ``nnx.Optimizer`` created inside ``nnx.jit``, stepped by an ``nnx.jit``
  training step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rmsprop_jax
from rmsprop_jax import presets

OPTIMIZERS = {
    "dqn2015": lambda lr: presets.dqn2015(learning_rate=lr),
    "graves2013": lambda lr: presets.graves2013(learning_rate=lr),
    "pytorch": lambda lr: presets.pytorch(lr=lr, alpha=0.99, eps=1e-5, centered=True, momentum=0.9),
    "tensorflow_v1": lambda lr: presets.tensorflow_v1(lr, decay=0.95, epsilon=1e-5, centered=True),
    "timm": lambda lr: presets.timm(lr=lr, alpha=0.99, eps=1e-5, momentum=0.9, lr_in_momentum=False),
    "keras": lambda lr: presets.keras(learning_rate=lr, centered=True, global_clipnorm=1.0),
    "8bit_packed": lambda lr: rmsprop_jax.rmsprop(lr, momentum=0.9, state_dtype="8bit", pack_small_leaves=True),
    "bias_correction": lambda lr: rmsprop_jax.rmsprop(lr, centered=True, bias_correction=True, eps=1e-3),
}


def make_train(config: dict):
    """PureJaxRL's shape: a config in, a pure ``train(rng)`` out, the optimizer built inside."""

    def train(rng):
        data_key, init_key = jax.random.split(rng)
        x = jax.random.normal(data_key, (config["BATCH"], 64))
        true_w = jnp.linspace(-1.0, 1.0, 64 * 64).reshape(64, 64)
        y = jnp.tanh(x @ true_w)
        params = {"w": 0.1 * jax.random.normal(init_key, (64, 64)), "b": jnp.zeros(64), "c": jnp.zeros(64)}
        tx = optax.chain(optax.clip_by_global_norm(10.0), OPTIMIZERS[config["OPT"]](config["LR"]))
        state = tx.init(params)

        def loss_fn(params):
            return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) * (1 + params["c"]) - y) ** 2)

        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, state), None, length=config["STEPS"])
        return params, losses

    return train


@pytest.mark.slow
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_purejaxrl_make_train_under_jit_of_vmap_over_seeds(name):
    config = {"OPT": name, "LR": 3e-2, "BATCH": 32, "STEPS": 60}
    train = make_train(config)
    rngs = jax.vmap(jax.random.PRNGKey)(jnp.arange(3))
    _, losses = jax.jit(jax.vmap(train))(rngs)
    assert losses.shape == (3, config["STEPS"])
    assert np.all(losses[:, -1] < 0.8 * losses[:, 0]), losses[:, [0, -1]]  # it trains, every seed
    assert len({float(loss) for loss in losses[:, -1]}) == 3  # three seeds, three runs
    for seed in range(3):  # each seed's run is the one jit alone gives (the first steps: later ones
        # amplify the FMA rounding that vmap's different fusions leave, as any chaotic training does)
        _, single_losses = jax.jit(train)(rngs[seed])
        tolerance = 1e-2 if name == "8bit_packed" else 1e-4
        np.testing.assert_allclose(losses[seed, :10], single_losses[:10], rtol=tolerance, atol=1e-6)


def _meta_loss(make_inner, lr, steps=5):
    """optax's meta-learning example: the loss after ``steps`` inner steps, as a function of lr."""
    target = jnp.linspace(-2.0, 2.0, 32)
    params = jnp.zeros(32)
    tx = optax.inject_hyperparams(make_inner)(learning_rate=lr)
    state = tx.init(params)

    def loss(p):
        return jnp.sum((p - target) ** 2 * (1 + jnp.abs(target)))

    for _ in range(steps):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    return loss(params)


@pytest.mark.slow
def test_meta_learning_through_the_update_matches_optax_and_tunes_the_learning_rate():
    ours = jax.jit(jax.grad(lambda lr: _meta_loss(lambda learning_rate: rmsprop_jax.rmsprop(learning_rate), lr)))
    theirs = jax.jit(jax.grad(lambda lr: _meta_loss(lambda learning_rate: optax.rmsprop(learning_rate), lr)))
    np.testing.assert_allclose(ours(0.05), theirs(0.05), rtol=1e-4)
    # The outer loop of the example: adam on log lr, through our update.
    meta = optax.adam(0.1)
    log_lr = jnp.log(0.01)
    meta_state = meta.init(log_lr)

    def outer(log_lr, meta_state):
        value, grad = jax.value_and_grad(lambda v: _meta_loss(rmsprop_jax.rmsprop, jnp.exp(v)))(log_lr)
        updates, meta_state = meta.update(grad, meta_state)
        return optax.apply_updates(log_lr, updates), meta_state, value

    outer = jax.jit(outer)
    values = []
    for _ in range(15):
        log_lr, meta_state, value = outer(log_lr, meta_state)
        values.append(float(value))
    assert float(jnp.exp(log_lr)) > 0.03  # from 0.01, too small for 5 steps: tripled at least
    assert values[-1] < 0.7 * values[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dqn2015", "8bit_packed"])
def test_nnx_model_and_optimizer_created_and_stepped_inside_nnx_jit(name):
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(64, 64, rngs=rngs)
            self.out = nnx.Linear(64, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.hidden(x)))

    x = jax.random.normal(jax.random.PRNGKey(1), (32, 64))
    y = jnp.sin(x.sum(axis=1, keepdims=True))

    def loss_fn(model):
        return jnp.mean((model(x) - y) ** 2)

    @nnx.jit
    def create():
        model = MLP(nnx.Rngs(0))
        return model, nnx.Optimizer(model, OPTIMIZERS[name](1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    model, optimizer = create()
    losses = [float(train_step(model, optimizer)) for _ in range(20)]
    assert losses[-1] < 0.7 * losses[0]
    reference = MLP(nnx.Rngs(0))  # the same steps eagerly
    eager = nnx.Optimizer(reference, OPTIMIZERS[name](1e-2), wrt=nnx.Param)
    for _ in range(20):
        eager.update(reference, nnx.grad(loss_fn)(reference))
    np.testing.assert_allclose(float(loss_fn(model)), float(loss_fn(reference)), rtol=1e-2 if "8bit" in name else 1e-4)
