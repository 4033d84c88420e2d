"""A2C on gymnax CartPole-v1 with Stable-Baselines3's optimizer, in the PureJaxRL style.

Stable-Baselines3's A2C defaults, as RL Zoo trains CartPole-v1 (``hyperparams/a2c.yml``:
8 envs, 5e5 steps, ``ent_coef`` 0): n_steps 5, gamma 0.99, GAE lambda 1, value coefficient
0.5, separate 64-64 tanh actor and critic with orthogonal initialization, gradients clipped
to global norm 0.5, and ``torch.optim.RMSprop(lr=7e-4, alpha=0.99, eps=1e-5)``: here
``presets.pytorch(lr=7e-4, alpha=0.99, eps=1e-5)`` after ``optax.clip_by_global_norm(0.5)``
(or ``optax.rmsprop`` with the closest settings, for comparison: eps inside the root). As in
SB3, an episode cut by the time limit bootstraps from the value of its last observation.

Run from the repository root (needs the ``rl`` extra)::

    python examples/a2c_gymnax.py --seeds 4

It prints each optimizer's greedy return per seed at the end and writes
``benchmarks/results/rl-a2c-cartpole.json``.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before any import starts XLA's CPU backend: see rl_common.SCHEDULER_FLAG
    _FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}".strip()

from typing import Any

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rl_common

from rmsprop_jax import presets

CONFIG: dict[str, Any] = {
    "NUM_ENVS": 8,
    "NUM_STEPS": 5,
    "TOTAL_TIMESTEPS": 5e5,
    "LR": 7e-4,
    "ALPHA": 0.99,
    "EPS": 1e-5,
    "GAMMA": 0.99,
    "GAE_LAMBDA": 1.0,
    "ENT_COEF": 0.0,
    "VF_COEF": 0.5,
    "MAX_GRAD_NORM": 0.5,
    "OPTIMIZER": "rmsprop_jax",
    "EVAL_EPISODES": 10,
}
"""SB3's A2C defaults with RL Zoo's CartPole-v1 settings."""


class ActorCritic(nn.Module):
    """SB3's ``MlpPolicy`` for A2C: separate 64-64 tanh networks, orthogonal init (gains
    sqrt(2) hidden, 0.01 policy head, 1 value head), zero biases."""

    action_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        def dense(features: int, gain: float) -> nn.Dense:
            return nn.Dense(features, kernel_init=nn.initializers.orthogonal(gain), bias_init=nn.initializers.zeros)

        pi = nn.tanh(dense(64, np.sqrt(2))(nn.tanh(dense(64, np.sqrt(2))(x))))
        vf = nn.tanh(dense(64, np.sqrt(2))(nn.tanh(dense(64, np.sqrt(2))(x))))
        return dense(self.action_dim, 0.01)(pi), dense(1, 1.0)(vf)[..., 0]


def build_optimizer(config: dict[str, Any]) -> optax.GradientTransformation:
    """SB3's ``clip_grad_norm_(0.5)`` then its RMSprop, built inside ``train``."""
    if config["OPTIMIZER"] in rl_common.STATE_DTYPES:
        state_dtype = rl_common.STATE_DTYPES[config["OPTIMIZER"]]
        rmsprop = presets.pytorch(lr=config["LR"], alpha=config["ALPHA"], eps=config["EPS"], state_dtype=state_dtype)
    elif config["OPTIMIZER"] == "optax":
        rmsprop = optax.rmsprop(config["LR"], decay=config["ALPHA"], eps=config["EPS"])
    else:
        raise ValueError(f"Invalid OPTIMIZER value: {config['OPTIMIZER']!r} (one of {', '.join(rl_common.OPTIMIZERS)})")
    return optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]), rmsprop)


def make_train(config: dict[str, Any]):  # noqa: ANN201 (returns train, PureJaxRL's pattern)
    """Returns ``train(rng)``: one seed's whole run, a pure function of its key."""
    env, env_params = gymnax.make(rl_common.ENV_ID)
    num_envs, num_steps = config["NUM_ENVS"], config["NUM_STEPS"]
    updates = int(config["TOTAL_TIMESTEPS"]) // (num_envs * num_steps)
    network = ActorCritic(env.action_space(env_params).n)
    obs_shape = env.observation_space(env_params).shape
    gamma = config["GAMMA"]

    def train(rng: jax.Array) -> dict[str, jax.Array]:
        rng, init_key, reset_key = jax.random.split(rng, 3)
        params = network.init(init_key, jnp.zeros(obs_shape))
        tx = build_optimizer(config)
        opt_state = tx.init(params)
        obs, env_state = rl_common.reset(env, env_params, reset_key, num_envs)

        def env_step(carry: tuple, key: jax.Array) -> tuple[tuple, dict[str, jax.Array]]:
            params, obs, env_state, episode_return = carry
            action_key, step_key = jax.random.split(key)
            logits, value = network.apply(params, obs)
            action = jax.random.categorical(action_key, logits)
            next_obs, env_state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(step_key, num_envs), env_state, action, env_params
            )
            # SB3 (handle_timeout_termination): a time-limit cut adds gamma * V(last observation).
            _, final_value = network.apply(params, info["final_observation"])
            bootstrapped = reward + jnp.where(truncated & ~terminated, gamma * final_value, 0.0)
            episode_return = episode_return + reward
            done = terminated | truncated
            finished = jnp.where(done, episode_return, jnp.nan)
            transition = {
                "obs": obs,
                "action": action,
                "reward": bootstrapped,
                "done": done.astype(jnp.float32),
                "value": value,
                "finished": finished,
            }
            return (params, next_obs, env_state, jnp.where(done, 0.0, episode_return)), transition

        def returns_of(rollout: dict[str, jax.Array], last_value: jax.Array) -> tuple[jax.Array, jax.Array]:
            """SB3's GAE(lambda) advantages and returns, from the rollout's values."""

            def back(carry: tuple, t: dict[str, jax.Array]) -> tuple[tuple, jax.Array]:
                advantage, next_value = carry
                delta = t["reward"] + gamma * next_value * (1.0 - t["done"]) - t["value"]
                advantage = delta + gamma * config["GAE_LAMBDA"] * (1.0 - t["done"]) * advantage
                return (advantage, t["value"]), advantage

            _, advantages = jax.lax.scan(back, (jnp.zeros(num_envs), last_value), rollout, reverse=True)
            return advantages, advantages + rollout["value"]

        def loss_fn(params: Any, rollout: dict[str, jax.Array], advantages: jax.Array, returns: jax.Array) -> jax.Array:
            logits, value = network.apply(params, rollout["obs"])
            log_probs = jax.nn.log_softmax(logits)
            chosen = jnp.take_along_axis(log_probs, rollout["action"][..., None], axis=-1)[..., 0]
            policy_loss = -jnp.mean(advantages * chosen)
            value_loss = jnp.mean((returns - value) ** 2)
            entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
            return policy_loss - config["ENT_COEF"] * entropy + config["VF_COEF"] * value_loss

        def update(carry: tuple, key: jax.Array) -> tuple[tuple, jax.Array]:
            params, opt_state, obs, env_state, episode_return = carry
            (_, obs, env_state, episode_return), rollout = jax.lax.scan(
                env_step, (params, obs, env_state, episode_return), jax.random.split(key, num_steps)
            )
            _, last_value = network.apply(params, obs)
            advantages, returns = returns_of(rollout, last_value)
            grads = jax.grad(loss_fn)(params, rollout, advantages, returns)
            step, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, step)
            return (params, opt_state, obs, env_state, episode_return), jnp.nanmean(rollout["finished"])

        carry = (params, opt_state, obs, env_state, jnp.zeros(num_envs))
        carry, finished = jax.lax.scan(update, carry, jax.random.split(rng, updates))
        return {"params": carry[0], "training_returns": finished}

    return train


def make_policy(config: dict[str, Any]) -> rl_common.Policy:
    """The greedy (most probable) action of the trained actor."""
    env, env_params = gymnax.make(rl_common.ENV_ID)
    network = ActorCritic(env.action_space(env_params).n)
    return lambda params, obs: jnp.argmax(network.apply(params, obs)[0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains each chosen optimizer on the same seeds; prints and writes the results."""
    parser = rl_common.arguments(
        __doc__.splitlines()[0], CONFIG["TOTAL_TIMESTEPS"], "benchmarks/results/rl-a2c-cartpole.json"
    )
    args = parser.parse_args(argv)
    extra = {
        "example": "examples/a2c_gymnax.py",
        "published": "RL Zoo benchmark.md: SB3 A2C on CartPole-v1, 500 +/- 0 at 5e5 steps",
        "goal": "mean final return >= 475 over 4 seeds, at least 3 at 500; at most 180 s on the 2-core CPU",
    }
    return rl_common.main("A2C", make_train, make_policy, CONFIG, args, extra)


if __name__ == "__main__":
    main()
