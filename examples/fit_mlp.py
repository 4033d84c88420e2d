"""A small runnable example: fit a two-layer MLP with rmsprop_jax in a jitted step.

Run it with ``python3 examples/fit_mlp.py`` (``--help`` lists the options). It needs
only the core dependencies (jax, optax) and finishes in a few seconds on a laptop CPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

import rmsprop_jax


def make_data(key: jax.Array, n: int = 512) -> tuple[jax.Array, jax.Array]:
    """Noisy samples of ``sin(3x)`` on ``[-1, 1]``."""
    x_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(x_key, (n, 1), minval=-1.0, maxval=1.0)
    return x, jnp.sin(3.0 * x) + 0.05 * jax.random.normal(noise_key, (n, 1))


def init_mlp(key: jax.Array, hidden: int = 64) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (1, hidden)),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, 1)) / jnp.sqrt(hidden),
        "b2": jnp.zeros(1),
    }


def mlp(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def train(steps: int = 2000, seed: int = 0) -> dict[str, float]:
    """Trains the MLP; returns the initial and final mean squared error."""
    data_key, init_key = jax.random.split(jax.random.key(seed))
    x, y = make_data(data_key)
    params = init_mlp(init_key)
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        rmsprop_jax.rmsprop(optax.cosine_decay_schedule(3e-3, steps), momentum=0.9, centered=True),
    )
    opt_state = tx.init(params)

    def loss_fn(params: dict[str, jax.Array]) -> jax.Array:
        return jnp.mean((mlp(params, x) - y) ** 2)

    @jax.jit
    def step(params: dict, opt_state: rmsprop_jax.RmsPropState) -> tuple[dict, rmsprop_jax.RmsPropState, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    initial = float(loss_fn(params))
    start = time.perf_counter()
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state)
        if i % max(steps // 5, 1) == 0:
            print(f"step {i:5d}  loss {float(loss):.5f}")
    final = float(loss_fn(params))
    print(f"final loss {final:.5f} (initial {initial:.5f}) in {time.perf_counter() - start:.1f} s")
    return {"initial_loss": initial, "final_loss": final}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 examples/fit_mlp.py", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error("--steps must be positive")
    train(args.steps, args.seed)


if __name__ == "__main__":
    main()
