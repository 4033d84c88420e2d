"""Presets for the frameworks' RMSProp implementations.

Each constructor takes the framework's argument names and defaults and returns the
:func:`rmsprop_jax.rmsprop` configuration that reproduces the framework's parameter
trajectory (float32, to rounding; verified against the real libraries in the tests).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rmsprop_jax import _validation as validation
from rmsprop_jax import clipping
from rmsprop_jax._leaf_update import RmsConfig, Scalar
from rmsprop_jax._placement import OffloadRule
from rmsprop_jax._state_options import StateOptions
from rmsprop_jax._state_policy import StateDtypeOrPolicy
from rmsprop_jax._transform import build_rmsprop


def momentum_or_none(momentum: Scalar | None) -> Scalar | None:
    """The frameworks' ``if momentum > 0`` as a static choice: exactly 0 keeps no buffer.

    Anything else, traced (under ``optax.inject_hyperparams``) or invalid, goes on to
    the core, which keeps the buffer or rejects the value in the preset's names.
    """
    if isinstance(momentum, (int, float)) and not isinstance(momentum, bool) and momentum == 0:
        return None
    return momentum


def pytorch(
    lr: optax.ScalarOrSchedule = 0.01,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0,
    momentum: float = 0,
    centered: bool = False,
    maximize: bool = False,
    *,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    """``torch.optim.RMSprop``: eps outside the root, lr outside the momentum buffer.

    The accumulator starts at 0; ``weight_decay`` is added to the gradient (coupled);
    the momentum buffer accumulates ``g / (sqrt(v) + eps)`` and the parameter moves by
    ``-lr * buffer``, so a schedule (torch's ``LRScheduler``) rescales the whole
    buffer, as in torch. Deviation: a centered variance that rounding drives
    below zero is clamped (torch returns NaN). Complex params: torch treats the
    real and imaginary parts as two parameters with separate averages; we average
    ``|g|^2``.

    Args:
      lr: Learning rate, or an optax schedule (``count -> lr``, count from 0,
        as a torch scheduler stepped after each ``optimizer.step()``).
      alpha: Smoothing constant of the square average, in ``[0, 1]``.
      eps: Non-negative term added to the root of the average.
      weight_decay: L2 penalty added to the gradient.
      momentum: Momentum factor in ``[0, 1)``; 0 keeps no buffer.
      centered: Whether to normalise by the variance estimate.
      maximize: Whether to maximize the objective.
      state_dtype: As in :func:`rmsprop_jax.rmsprop`.
      pack_small_leaves: As in :func:`rmsprop_jax.rmsprop`.
      offload_state: As in :func:`rmsprop_jax.rmsprop`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state keeps torch's
      ``square_avg`` as ``nu`` (``grad_avg`` as ``mu``, ``momentum_buffer`` as ``trace``);
      :func:`pytorch_state` converts a torch optimizer's state into it.

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax import presets
      >>> tx = presets.pytorch(lr=0.01, alpha=0.99, momentum=0.9)
      >>> state = tx.init(jnp.zeros(3))

    References:
      PyTorch, `torch.optim.RMSprop
      <https://pytorch.org/docs/stable/generated/torch.optim.RMSprop.html>`_.
    """
    config = RmsConfig(
        decay=alpha,
        eps=eps,
        eps_in_sqrt=False,
        centered=centered,
        momentum=momentum_or_none(momentum),
        lr_in_momentum=False,
        maximize=maximize,
    )
    return build_rmsprop(
        config,
        {"learning_rate": "lr", "decay": "alpha"},
        lr,
        weight_decay=weight_decay,
        state=StateOptions(state_dtype, pack_small_leaves, offload_state),
    )


def keras(
    learning_rate: optax.ScalarOrSchedule = 0.001,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    centered: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    *,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    """Keras 3 ``keras.optimizers.RMSprop``: epsilon inside the root, lr inside momentum.

    The accumulator starts at 0. ``weight_decay`` is decoupled: the variable
    shrinks by ``lr * weight_decay * p`` before the update, as Keras's base
    optimizer does. Gradients are clipped first: ``clipnorm`` per variable
    (:func:`rmsprop_jax.clipping.clip_by_leaf_norm`), ``clipvalue`` elementwise,
    ``global_clipnorm`` over all variables; at most one of the three, as in Keras.

    Args:
      learning_rate: A float, an optax schedule, or a Keras
        ``LearningRateSchedule`` (evaluated at the step count from 0, as Keras
        does at ``optimizer.iterations``; needs ``KERAS_BACKEND=jax`` to trace).
      rho: Discount of the moving average of the squared gradient, in ``[0, 1]``.
      momentum: Momentum in ``[0, 1)``; 0 keeps no buffer.
      epsilon: Non-negative term added to the average inside the root.
      centered: Whether to normalise by the variance estimate.
      weight_decay: Decoupled weight decay, or ``None``.
      clipnorm: Positive maximum norm of each variable's gradient, or ``None``.
      clipvalue: Positive maximum absolute gradient entry, or ``None``.
      global_clipnorm: Positive maximum global norm of the gradients, or ``None``.
      state_dtype: As in :func:`rmsprop_jax.rmsprop`.
      pack_small_leaves: As in :func:`rmsprop_jax.rmsprop`.
      offload_state: As in :func:`rmsprop_jax.rmsprop`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; a chain of the
      clipping and the RMSProp step when clipping is set.

    Raises:
      ValueError: a bad argument (named as Keras names it), or more than one of
        ``clipnorm``, ``clipvalue``, ``global_clipnorm``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax import presets
      >>> tx = presets.keras(learning_rate=1e-3, rho=0.9, global_clipnorm=1.0)
      >>> state = tx.init(jnp.zeros(3))

    References:
      Keras, `RMSprop <https://keras.io/api/optimizers/rmsprop/>`_.
    """
    clips = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
    chosen = {name: value for name, value in clips.items() if value is not None}
    if len(chosen) > 1:
        raise ValueError(
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
            f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
        )
    for name, value in chosen.items():
        validation.check_interval(name, value, 0.0)
        if validation.any_equal(value, 0.0):
            raise ValueError(f"Invalid {name} value: 0.0 ({name} must be > 0; None disables it)")
    config = RmsConfig(
        decay=rho,
        eps=epsilon,
        eps_in_sqrt=True,
        centered=centered,
        momentum=momentum_or_none(momentum),
        decoupled_weight_decay=True,
        lr_in_momentum=True,
    )
    step = build_rmsprop(
        config,
        {"decay": "rho", "eps": "epsilon"},
        learning_rate,
        weight_decay=0.0 if weight_decay is None else weight_decay,
        state=StateOptions(state_dtype, pack_small_leaves, offload_state),
    )
    if not chosen:
        return step
    if clipnorm is not None:
        clip = clipping.clip_by_leaf_norm(clipnorm)
    elif clipvalue is not None:
        clip = optax.clip(clipvalue)
    else:
        assert global_clipnorm is not None  # the one chosen
        clip = optax.clip_by_global_norm(global_clipnorm)
    return optax.chain(clip, step)


def tensorflow_v1(
    learning_rate: optax.ScalarOrSchedule,
    decay: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-10,
    centered: bool = False,
    *,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    """``tf.compat.v1.train.RMSPropOptimizer``: accumulator from 1, eps inside the root.

    ``ms = decay * ms + (1 - decay) * g^2`` from ``ms = 1``,
    ``mom = momentum * mom + lr * g / sqrt(ms + epsilon)``, ``var -= mom``.

    Args:
      learning_rate: A float or an optax schedule.
      decay: Discount of the history, in ``[0, 1]``.
      momentum: Momentum in ``[0, 1)``; 0 keeps no buffer (TF1 keeps one, with
        the same result).
      epsilon: Non-negative term added to the average inside the root.
      centered: Whether to normalise by the variance estimate.
      state_dtype: As in :func:`rmsprop_jax.rmsprop`.
      pack_small_leaves: As in :func:`rmsprop_jax.rmsprop`.
      offload_state: As in :func:`rmsprop_jax.rmsprop`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state keeps TF1's ``rms``
      slot as ``nu`` (``mg`` as ``mu``, ``momentum`` as ``trace``).

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax import presets
      >>> tx = presets.tensorflow_v1(1e-3, decay=0.9, momentum=0.9)
      >>> print(tx.init(jnp.zeros(2)).nu)
      [1. 1.]

    References:
      TensorFlow, `tf.compat.v1.train.RMSPropOptimizer
      <https://www.tensorflow.org/api_docs/python/tf/compat/v1/train/RMSPropOptimizer>`_.
    """
    config = RmsConfig(
        decay=decay, eps=epsilon, eps_in_sqrt=True, centered=centered, momentum=momentum_or_none(momentum)
    )
    return build_rmsprop(
        config,
        {"eps": "epsilon"},
        learning_rate,
        initial_scale=1.0,
        state=StateOptions(state_dtype, pack_small_leaves, offload_state),
    )


def timm(
    lr: optax.ScalarOrSchedule = 0.01,
    alpha: float = 0.9,
    eps: float = 1e-10,
    weight_decay: float = 0,
    momentum: float = 0.0,
    centered: bool = False,
    decoupled_decay: bool = False,
    corrected_weight_decay: bool = False,
    lr_in_momentum: bool = True,
    caution: bool = False,
    foreach: bool | None = None,
    *,
    max_lr: float | None = None,
    state_dtype: StateDtypeOrPolicy = None,
    pack_small_leaves: bool = False,
    offload_state: OffloadRule = False,
) -> optax.GradientTransformationExtraArgs:
    """timm 1.0.x ``RMSpropTF``: TF-style RMSProp in PyTorch.

    Accumulator from 1, eps inside the root, lr inside the momentum buffer unless
    ``lr_in_momentum=False``. ``decoupled_decay`` multiplies the parameter by
    ``1 - lr * weight_decay``; with ``corrected_weight_decay`` by
    ``1 - lr^2 / max_lr * weight_decay``, ``max_lr`` being the constructor's
    learning rate. ``caution`` applies only with momentum, as in timm.

    Args:
      lr: Learning rate, or an optax schedule.
      alpha: Smoothing constant, in ``[0, 1]``.
      eps: Non-negative term added to the average inside the root.
      weight_decay: Weight decay (coupled unless ``decoupled_decay``).
      momentum: Momentum in ``[0, 1)``; 0 keeps no buffer.
      centered: Whether to normalise by the variance estimate.
      decoupled_decay: Whether weight decay is decoupled (AdamW style).
      corrected_weight_decay: Whether decoupled decay scales with
        ``lr^2 / max_lr`` instead of ``lr``.
      lr_in_momentum: Whether the buffer accumulates ``lr * g / rms`` (TF) or
        ``g / rms`` (PyTorch).
      caution: Whether to mask the momentum direction where it disagrees in sign
        with the gradient (Cautious Optimizers).
      foreach: timm's choice between its for-loop and multi-tensor kernels;
        accepted so that a call ports unchanged. It has no effect here: XLA
        compiles one elementwise step (timm's two kernels agree too).
      max_lr: timm's snapshot of the constructor ``lr``, needed (positive) only
        for ``corrected_weight_decay`` with a schedule; with a float ``lr`` it
        is that ``lr``.
      state_dtype: As in :func:`rmsprop_jax.rmsprop`.
      pack_small_leaves: As in :func:`rmsprop_jax.rmsprop`.
      offload_state: As in :func:`rmsprop_jax.rmsprop`.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` whose state keeps timm's
      ``square_avg`` as ``nu`` (``grad_avg`` as ``mu``, ``momentum_buffer`` as ``trace``).

    Example:
      >>> import jax.numpy as jnp
      >>> from rmsprop_jax import presets
      >>> tx = presets.timm(lr=0.016, alpha=0.9, eps=1e-3, momentum=0.9)
      >>> state = tx.init(jnp.zeros(3))

    References:
      Wightman, `timm: RMSpropTF
      <https://github.com/huggingface/pytorch-image-models/blob/main/timm/optim/rmsprop_tf.py>`_.
    """
    # Inputs the mapping itself uses; the core checks everything else in timm's names.
    for flag, value in (("corrected_weight_decay", corrected_weight_decay), ("caution", caution)):
        validation.check_bool(flag, value)
    if foreach is not None:
        validation.check_bool("foreach", foreach)
    decay_coefficient: optax.ScalarOrSchedule = weight_decay
    if decoupled_decay and corrected_weight_decay and callable(lr):
        if max_lr is None:
            raise ValueError("Invalid max_lr value: None (corrected_weight_decay with a schedule needs max_lr > 0)")
        validation.check_interval("max_lr", max_lr, 0.0)
        if validation.any_equal(max_lr, 0.0):
            raise ValueError("Invalid max_lr value: 0.0 (max_lr must be > 0)")
        decay_coefficient = _corrected_decay(lr, weight_decay, max_lr)
    elif corrected_weight_decay and isinstance(lr, (int, float)) and lr <= 0:
        raise ValueError(f"Invalid lr value: {lr} (corrected_weight_decay needs a positive max lr)")
    momentum_kept = momentum_or_none(momentum)
    config = RmsConfig(
        decay=alpha,
        eps=eps,
        eps_in_sqrt=True,
        centered=centered,
        momentum=momentum_kept,
        decoupled_weight_decay=decoupled_decay,
        lr_in_momentum=lr_in_momentum,
        caution=caution and momentum_kept is not None,
    )
    return build_rmsprop(
        config,
        {"learning_rate": "lr", "decay": "alpha", "decoupled_weight_decay": "decoupled_decay"},
        lr,
        initial_scale=1.0,
        weight_decay=decay_coefficient,
        state=StateOptions(state_dtype, pack_small_leaves, offload_state),
    )


def _corrected_decay(schedule: optax.Schedule, weight_decay: float, max_lr: float) -> optax.Schedule:
    """timm's corrected decay ``lr^2 / max_lr * wd`` as a weight-decay schedule for ``lr``."""

    def coefficient(count: jax.typing.ArrayLike) -> jax.typing.ArrayLike:
        return weight_decay * jnp.asarray(schedule(count)) / max_lr

    return coefficient
