"""Continue a PyTorch or Keras RMSprop run in rmsprop_jax: convert the optimizer state.

Parameters are matched by order: the leaves of ``params`` (``jax.tree.leaves``)
must correspond one to one, with equal shapes, to the framework's parameters in its
own order (``model.parameters()`` for torch, the optimizer's variables for Keras).
Transpose or reorder your params first where the layouts differ; a mismatch raises
a ``ValueError`` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rmsprop_jax._state import RmsPropState
from rmsprop_jax._state_views import convert_state
from rmsprop_jax.presets.frameworks import keras, pytorch

_TORCH_HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")


def _to_numpy(value: Any) -> np.ndarray:
    """A torch tensor, Keras variable or array as a numpy array, copied: torch's
    state tensors are updated in place, and a view would follow them."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.array(value, copy=True)


def _leaf_from(value: Any, template: jax.Array, what: str) -> jax.Array:
    if value is None:
        return template
    array = _to_numpy(value)
    if np.iscomplexobj(array):
        raise ValueError(f"{what} is complex: torch and Keras average real and imaginary parts separately")
    if array.shape != template.shape:
        raise ValueError(f"{what} has shape {array.shape} but the matching param has shape {template.shape}")
    return jnp.asarray(array, template.dtype)


def _replace_rms_state(state: Any, rms: RmsPropState) -> Any:
    """Puts ``rms`` where the RmsPropState sits in a (possibly chained) state."""
    if isinstance(state, RmsPropState):
        return rms
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return tuple(_replace_rms_state(part, rms) for part in state)
    return state


def _find_rms_state(state: Any) -> RmsPropState:
    if isinstance(state, RmsPropState):
        return state
    for part in state:
        if isinstance(part, RmsPropState):
            return part
    raise TypeError("no RmsPropState in the preset's state")


def _filled(
    template: RmsPropState,
    treedef: Any,
    count: int | None,
    nu: list[Any],
    mu: list[Any],
    trace: list[Any],
    names: list[str],
) -> RmsPropState:
    def fill(field: Any, values: list[Any], label: str) -> Any:
        if field is None:
            return None
        leaves = treedef.flatten_up_to(field)
        return jax.tree.unflatten(
            treedef,
            [_leaf_from(v, t, f"{label} of {n}") for v, t, n in zip(values, leaves, names, strict=True)],
        )

    return RmsPropState(
        count=None if template.count is None else jnp.asarray(count or 0, jnp.int32),
        nu=fill(template.nu, nu, "the square average"),
        mu=fill(template.mu, mu, "the gradient average"),
        trace=fill(template.trace, trace, "the momentum buffer"),
    )


def pytorch_state(
    state_dict: Mapping[str, Any],
    params: optax.Params,
    *,
    lr: optax.ScalarOrSchedule | None = None,
    pack_small_leaves: bool = False,
) -> Any:
    """Converts ``torch.optim.RMSprop(...).state_dict()`` into the state of
    :func:`rmsprop_jax.presets.pytorch` with the same arguments.

    Args:
      state_dict: The torch optimizer's ``state_dict()``; all param groups must
        share their hyperparameters.
      params: The params, as a pytree whose leaves follow the torch parameter
        order with the same shapes.
      lr: The learning rate the run continues with; default the param group's
        current ``lr``. With a schedule, the state's step count is torch's
        ``step``.
      pack_small_leaves: Whether the state is for
        ``presets.pytorch(..., pack_small_leaves=True)`` (packed layout).

    Returns:
      The state for ``presets.pytorch(lr, alpha, eps, weight_decay, momentum,
      centered, maximize, pack_small_leaves=pack_small_leaves)`` with the groups'
      values, ready for ``update``.

    Raises:
      ValueError: groups disagree, the parameter count or a shape differs, or a
        parameter is complex.

    Example:
      >>> import jax.numpy as jnp
      >>> import torch
      >>> from rmsprop_jax import presets
      >>> weight = torch.nn.Parameter(torch.ones(3))
      >>> torch_optimizer = torch.optim.RMSprop([weight], lr=0.01, alpha=0.9, momentum=0.9)
      >>> weight.grad = torch.tensor([1.0, 2.0, 3.0])
      >>> torch_optimizer.step()
      >>> params = {"w": jnp.asarray(weight.detach().numpy())}
      >>> state = presets.pytorch_state(torch_optimizer.state_dict(), params)
      >>> [f"{v:.4f}" for v in state.nu["w"]]  # torch's square_avg
      ['0.1000', '0.4000', '0.9000']
      >>> tx = presets.pytorch(lr=0.01, alpha=0.9, momentum=0.9)  # continue the run here
      >>> updates, state = tx.update({"w": jnp.array([1.0, 2.0, 3.0])}, state, params)
    """
    groups = state_dict["param_groups"]
    first = groups[0]
    for group in groups[1:]:
        differing = [k for k in _TORCH_HYPERPARAMETERS if group[k] != first[k]]
        if differing:
            raise ValueError(
                f"torch param groups differ in {differing}: convert each group with its own params and "
                "combine the presets with optax.multi_transform"
            )
    indices = [index for group in groups for index in group["params"]]
    leaves, treedef = jax.tree.flatten(params)
    if len(indices) != len(leaves):
        raise ValueError(f"the torch optimizer has {len(indices)} parameters but params has {len(leaves)} leaves")
    arguments = {name: first[name] for name in _TORCH_HYPERPARAMETERS}
    tx = pytorch(**{**arguments, "lr": first["lr"] if lr is None else lr})
    template = _find_rms_state(tx.init(params))
    entries = [state_dict["state"].get(index, {}) for index in indices]
    steps = {int(_to_numpy(entry["step"])) for entry in entries if "step" in entry}
    if template.count is not None and len(steps) > 1:
        raise ValueError(f"torch parameters were stepped different numbers of times: {sorted(steps)}")
    state = _filled(
        template,
        treedef,
        max(steps, default=0),
        [entry.get("square_avg") for entry in entries],
        [entry.get("grad_avg") for entry in entries],
        [entry.get("momentum_buffer") for entry in entries],
        [f"torch parameter {index}" for index in indices],
    )
    if pack_small_leaves:
        packed = pytorch(**{**arguments, "lr": first["lr"] if lr is None else lr}, pack_small_leaves=True)
        return convert_state(state, packed.init(params))
    return state


def keras_state(
    optimizer: Any, params: optax.Params, *, learning_rate: Any = None, pack_small_leaves: bool = False
) -> Any:
    """Converts a Keras 3 ``keras.optimizers.RMSprop`` into the state of
    :func:`rmsprop_jax.presets.keras` with the same arguments.

    Args:
      optimizer: A built Keras RMSprop optimizer (one that has applied gradients).
      params: The params, as a pytree whose leaves follow the optimizer's
        variables in order, with the same shapes.
      learning_rate: The learning rate the run continues with; default the
        optimizer's (its ``LearningRateSchedule``, or its current value).
      pack_small_leaves: Whether the state is for
        ``presets.keras(..., pack_small_leaves=True)`` (packed layout).

    Returns:
      The state for ``presets.keras(...)`` built from the optimizer's own
      configuration (a chain's state when it clips), with the step count of
      ``optimizer.iterations``.

    Raises:
      ValueError: the optimizer is not an RMSprop or not built, or the variable
        count or a shape differs.

    Example:
      >>> import os
      >>> os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported
      'jax'
      >>> import jax.numpy as jnp
      >>> import keras
      >>> from rmsprop_jax import presets
      >>> variable = keras.Variable(jnp.ones(3))
      >>> keras_optimizer = keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.9)
      >>> _ = keras_optimizer.apply_gradients([(jnp.array([1.0, 2.0, 3.0]), variable)])
      >>> params = {"w": jnp.asarray(variable.numpy())}
      >>> state = presets.keras_state(keras_optimizer, params)
      >>> [f"{v:.4f}" for v in state.nu["w"]]  # Keras' velocities
      ['0.1000', '0.4000', '0.9000']
      >>> tx = presets.keras(learning_rate=0.01, momentum=0.9)  # continue the run here
      >>> updates, state = tx.update({"w": jnp.array([1.0, 2.0, 3.0])}, state, params)
    """
    if type(optimizer).__name__ != "RMSprop" or not hasattr(optimizer, "rho"):
        raise ValueError(f"expected a keras.optimizers.RMSprop, got {type(optimizer).__name__}")
    if not optimizer.built:
        raise ValueError("the Keras optimizer has no state yet: it builds on its first apply_gradients")
    if learning_rate is None:
        schedule = optimizer._learning_rate
        learning_rate = schedule if callable(schedule) else float(_to_numpy(optimizer.learning_rate))
    arguments = {
        "learning_rate": learning_rate,
        "rho": optimizer.rho,
        "momentum": optimizer.momentum,
        "epsilon": optimizer.epsilon,
        "centered": optimizer.centered,
        "weight_decay": optimizer.weight_decay,
        "clipnorm": optimizer.clipnorm,
        "clipvalue": optimizer.clipvalue,
        "global_clipnorm": optimizer.global_clipnorm,
    }
    tx = keras(**arguments)
    leaves, treedef = jax.tree.flatten(params)
    variables = optimizer._trainable_variables
    if len(variables) != len(leaves):
        raise ValueError(f"the Keras optimizer has {len(variables)} variables but params has {len(leaves)} leaves")
    state = tx.init(params)
    n = len(variables)
    rms = _filled(
        _find_rms_state(state),
        treedef,
        int(_to_numpy(optimizer.iterations)),
        list(optimizer._velocities),
        list(optimizer._average_gradients) or [None] * n,
        list(optimizer._momentums) or [None] * n,
        [f"Keras variable {v.path}" for v in variables],
    )
    state = _replace_rms_state(state, rms)
    if pack_small_leaves:
        return convert_state(state, keras(**arguments, pack_small_leaves=True).init(params))
    return state
