"""Reinforcement learning's RMSProp settings, each with the preset call that reproduces it.

Each :class:`Recipe` names a published optimizer setting (a library's default, a config
file, a paper's code), where it was read, which preset and arguments reproduce it, and
how the tests check that (a parity test against the real library where it runs here).
The documentation's Reinforcement learning page renders :data:`RL_RECIPES`
(:func:`recipes_table`). Recipes configure presets; they hold no arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import optax

from rmsprop_jax.presets import frameworks, papers


class Recipe(NamedTuple):
    """One published RMSProp setting of an RL method and the preset call that reproduces it.

    Attributes:
      source: The method and code base, as its users name it.
      reference: The optimizer as the source builds it, in its own terms.
      read_at: Where the setting was read (repository and file).
      preset: The :mod:`rmsprop_jax.presets` constructor that reproduces it.
      arguments: The preset's arguments, in the preset's (the framework's) names.
      clip_global_norm: The gradient clipping the source applies first (its
        ``clip_grad_norm_`` or ``max_grad_norm``), or ``None``.
      checked: How the tests check the row.

    Example:
      >>> from rmsprop_jax import presets
      >>> a2c = presets.RL_RECIPES["sb3_a2c"]
      >>> a2c.preset, dict(a2c.arguments), a2c.clip_global_norm
      ('pytorch', {'lr': 0.0007, 'alpha': 0.99, 'eps': 1e-05}, 0.5)
      >>> tx = a2c.optimizer()  # optax.chain(clip_by_global_norm(0.5), presets.pytorch(...))
    """

    source: str
    reference: str
    read_at: str
    preset: str
    arguments: Mapping[str, float | bool]
    clip_global_norm: float | None
    checked: str

    def optimizer(self, **overrides: optax.ScalarOrSchedule | bool) -> optax.GradientTransformation:
        """The recipe's optimizer: the clipping, then the preset with its arguments
        (``overrides`` replace some, e.g. ``lr=optax.linear_schedule(...)``)."""
        preset = _PRESETS[self.preset](**{**self.arguments, **overrides})
        if self.clip_global_norm is None:
            return preset
        return optax.chain(optax.clip_by_global_norm(self.clip_global_norm), preset)

    def call(self) -> str:
        """The preset call, as a user writes it."""
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.arguments.items())
        call = f"presets.{self.preset}({arguments})"
        if self.clip_global_norm is None:
            return call
        return f"optax.chain(optax.clip_by_global_norm({self.clip_global_norm!r}), {call})"


_PRESETS = {
    "pytorch": frameworks.pytorch,
    "tensorflow_v1": frameworks.tensorflow_v1,
    "timm": frameworks.timm,
    "dqn2015": papers.dqn2015,
}

#: The RL recipes, keyed by a short name. ``tests/test_presets_recipes.py`` checks each row
#: (parity tests against torch, Stable-Baselines3's own optimizer and TF1 where they run).
RL_RECIPES: dict[str, Recipe] = {
    "sb3_a2c": Recipe(
        "Stable-Baselines3 A2C (default; RL Zoo's CartPole-v1)",
        "torch.optim.RMSprop(lr=7e-4, alpha=0.99, eps=1e-5), after clip_grad_norm_(0.5)",
        "DLR-RM/stable-baselines3 a2c/a2c.py (use_rms_prop=True, rms_prop_eps=1e-5, max_grad_norm=0.5)",
        "pytorch",
        {"lr": 7e-4, "alpha": 0.99, "eps": 1e-5},
        0.5,
        "parity with torch.optim.RMSprop and clip_grad_norm_, constant and RL Zoo's linear lr",
    ),
    "sb3_rmsprop_tf_like": Recipe(
        "Stable-Baselines3 RMSpropTFLike (RL Zoo's Atari A2C)",
        "RMSpropTFLike(lr=7e-4, alpha=0.99, eps=1e-5): eps inside the root, square average from 1, "
        "lr outside the momentum buffer, after clip_grad_norm_(0.5)",
        "DLR-RM/stable-baselines3 common/sb2_compat/rmsprop_tf_like.py; rl-baselines3-zoo hyperparams/a2c.yml",
        "timm",
        {"lr": 7e-4, "alpha": 0.99, "eps": 1e-5, "lr_in_momentum": False},
        0.5,
        "parity with SB3's own RMSpropTFLike (also with momentum 0.9 and a schedule)",
    ),
    "deep_q_rl": Recipe(
        "Nature DQN, DeepMind's form (deep_q_rl deepmind_rmsprop, NeuralQLearner.lua)",
        "p -= lr * g / sqrt(E[g^2] - E[g]^2 + 0.01), both averages decaying at 0.95, lr 2.5e-4",
        "spragunr/deep_q_rl deep_q_rl/updates.py (deepmind_rmsprop)",
        "dqn2015",
        {"learning_rate": 2.5e-4, "decay": 0.95, "eps": 0.01},
        None,
        "parity with a NumPy transcription of the update (Theano does not install here)",
    ),
    "dopamine_dqn": Recipe(
        "Nature DQN, Dopamine's form (dqn_nature.gin)",
        "tf.train.RMSPropOptimizer(learning_rate=2.5e-4, decay=0.95, momentum=0.0, epsilon=1e-5, centered=True)",
        "google/dopamine agents/dqn/configs/dqn_nature.gin",
        "tensorflow_v1",
        {"learning_rate": 2.5e-4, "decay": 0.95, "epsilon": 1e-5, "centered": True},
        None,
        "parity with tf.compat.v1.train.RMSPropOptimizer",
    ),
    "minatar_dqn": Recipe(
        "Nature DQN, MinAtar's form (examples/dqn.py)",
        "torch.optim.RMSprop(lr=2.5e-4, alpha=0.95, centered=True, eps=0.01): eps outside the root",
        "kenjyoung/MinAtar examples/dqn.py (STEP_SIZE, SQUARED_GRAD_MOMENTUM, MIN_SQUARED_GRAD)",
        "pytorch",
        {"lr": 2.5e-4, "alpha": 0.95, "eps": 0.01, "centered": True},
        None,
        "parity with torch.optim.RMSprop",
    ),
    "a3c_shared_rmsprop": Recipe(
        "A3C, shared RMSProp (rl_a3c_pytorch, `--optimizer RMSprop`)",
        "SharedRMSprop(lr=1e-4): torch's RMSprop (alpha 0.99, eps 1e-8 outside the root) with the "
        "statistics shared by all workers",
        "dgriff777/rl_a3c_pytorch shared_optim.py, main.py",
        "pytorch",
        {"lr": 1e-4, "alpha": 0.99, "eps": 1e-8},
        None,
        "parity with torch.optim.RMSprop (the shared optimizer's step is torch's)",
    ),
}


def recipes_table() -> str:
    """:data:`RL_RECIPES` as a Markdown table (the Reinforcement learning page shows it)."""
    rows = ["| source | as published | rmsprop_jax | checked |", "|---|---|---|---|"]
    for recipe in RL_RECIPES.values():
        rows.append(f"| {recipe.source} | {recipe.reference} | `{recipe.call()}` | {recipe.checked} |")
    return "\n".join(rows)
