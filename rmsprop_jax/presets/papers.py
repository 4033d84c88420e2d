"""Presets for RMSProp as three papers define it, with their constants."""

from __future__ import annotations

import optax

from rmsprop_jax._placement import OffloadRule
from rmsprop_jax._state_options import StateOptions
from rmsprop_jax._state_policy import StateDtypeOrPolicy
from rmsprop_jax._transform import rmsprop


def hinton2012(
    learning_rate: optax.ScalarOrSchedule,
    decay: float = 0.9,
    *,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    """RMSProp as introduced in Hinton's Coursera lecture 6e (2012).

    "Divide the learning rate for a weight by a running average of the magnitudes
    of recent gradients for that weight": ``MeanSquare = decay * MeanSquare +
    (1 - decay) * g^2``, ``w -= lr * g / sqrt(MeanSquare)``, with decay 0.9, no
    eps and no momentum. Zero gradients give zero updates.

    Args:
      learning_rate: A float or an optax schedule.
      decay: Decay of the mean square, in ``[0, 1]`` (0.9 in the lecture).
      state_dtype: As in :func:`rmsprop_jax.rmsprop`.
      pack_small_leaves: As in :func:`rmsprop_jax.rmsprop`.
      offload_state: As in :func:`rmsprop_jax.rmsprop`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state is the lecture's
      ``MeanSquare`` alone (``nu``).

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax import presets
      >>> tx = presets.hinton2012(0.01)
      >>> updates, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(jnp.zeros(2)))
      >>> print(updates)
      [-0.         -0.03162277]

    References:
      Hinton, Srivastava and Swersky, `Neural Networks for Machine Learning,
      Lecture 6e: rmsprop
      <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012.
    """
    state = StateOptions(state_dtype, pack_small_leaves, offload_state)
    return rmsprop(learning_rate, decay=decay, eps=0.0, **state._asdict())


def graves2013(
    learning_rate: optax.ScalarOrSchedule = 1e-4,
    decay: float = 0.95,
    momentum: float = 0.9,
    eps: float = 1e-4,
    *,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    """Centered RMSProp with momentum from Graves (2013), eqs. 38-41.

    ``n = a n + (1 - a) g^2``, ``m = a m + (1 - a) g``,
    ``D = b D - lr g / sqrt(n - m^2 + eps)``, ``w = w + D``, with
    ``a = 0.95``, ``b = 0.9``, ``lr = 1e-4``, ``eps = 1e-4``: eps inside the root,
    the learning rate inside the momentum.

    Args:
      learning_rate: A float or an optax schedule (1e-4 in the paper).
      decay: The averages' decay ``a`` (0.95).
      momentum: The momentum ``b`` (0.9), in ``[0, 1)``.
      eps: Positive term inside the root (1e-4).
      state_dtype: As in :func:`rmsprop_jax.rmsprop`.
      pack_small_leaves: As in :func:`rmsprop_jax.rmsprop`.
      offload_state: As in :func:`rmsprop_jax.rmsprop`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state keeps the paper's
      ``n`` as ``nu``, ``m`` as ``mu`` and ``D`` as ``trace``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax import presets
      >>> state = presets.graves2013().init(jnp.zeros(3))

    References:
      Graves, `Generating Sequences With Recurrent Neural Networks
      <https://arxiv.org/abs/1308.0850>`_, 2013, section 4, eqs. 38-41.
    """
    return _graves_form(
        learning_rate, decay, eps, momentum, StateOptions(state_dtype, pack_small_leaves, offload_state)
    )


def dqn2015(
    learning_rate: optax.ScalarOrSchedule = 2.5e-4,
    decay: float = 0.95,
    eps: float = 0.01,
    *,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    """Centered RMSProp of the Nature DQN (Mnih et al. 2015), as in NeuralQLearner.lua.

    ``g = 0.95 g + 0.05 dw``, ``g2 = 0.95 g2 + 0.05 dw^2``,
    ``w += lr * dw / sqrt(g2 - g^2 + 0.01)`` with ``lr = 2.5e-4``: both averages
    decay at 0.95, eps 0.01 inside the root, no momentum (``dw`` is the descent
    direction there, so the same step in terms of the gradient).

    Args:
      learning_rate: A float or an optax schedule (2.5e-4).
      decay: The averages' decay (0.95).
      eps: Positive term inside the root (0.01).
      state_dtype: As in :func:`rmsprop_jax.rmsprop`.
      pack_small_leaves: As in :func:`rmsprop_jax.rmsprop`.
      offload_state: As in :func:`rmsprop_jax.rmsprop`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state keeps DeepMind's
      averages of the squared gradient and of the gradient as ``nu`` and ``mu``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax import presets
      >>> state = presets.dqn2015().init(jnp.zeros(3))

    References:
      Mnih et al., `Human-level control through deep reinforcement learning
      <https://www.nature.com/articles/nature14236>`_, Nature 518, 2015;
      DeepMind's ``dqn/NeuralQLearner.lua`` (``qLearnMinibatch``).
    """
    return _graves_form(learning_rate, decay, eps, None, StateOptions(state_dtype, pack_small_leaves, offload_state))


def _graves_form(
    learning_rate: optax.ScalarOrSchedule,
    decay: float,
    eps: float,
    momentum: float | None,
    state: StateOptions,
) -> optax.GradientTransformationExtraArgs:
    """Graves' centered step, eps inside the root and the learning rate inside the momentum; the
    Nature DQN's RMSProp is this form without momentum."""
    return rmsprop(
        learning_rate,
        decay=decay,
        eps=eps,
        eps_in_sqrt=True,
        centered=True,
        momentum=momentum,
        lr_in_momentum=True,
        **state._asdict(),
    )
