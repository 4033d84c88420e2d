"""The optimizer state of :func:`rmsprop_jax.rmsprop` and :func:`rmsprop_jax.scale_by_rms`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import optax

from rmsprop_jax._packing import Packed

if TYPE_CHECKING:
    from rmsprop_jax._plan import StatePlan


class Field(NamedTuple):
    """One state array of a leaf: its name in :class:`RmsPropState`, the number that keys its
    stochastic rounding (:func:`rmsprop_jax._dtypes.rounding_seed`), and whether it is signed."""

    name: str
    number: int
    signed: bool


NU = Field("nu", 0, signed=False)
MU = Field("mu", 1, signed=True)
TRACE = Field("trace", 2, signed=True)
FIELDS = (NU, MU, TRACE)


class RmsPropState(NamedTuple):
    """State of :func:`rmsprop_jax.rmsprop` and :func:`rmsprop_jax.scale_by_rms`.

    A plain pytree: it can be jitted, vmapped, pmapped and checkpointed. Fields a
    configuration does not use are ``None`` (an empty pytree), so a state's tree
    structure tells which variant built it.

    With ``state_dtype="8bit"`` each quantized leaf of ``nu``, ``mu`` and ``trace`` is a
    ``Quantized(codes, scale)`` pair (``uint8`` codes shaped like the param, one float32
    scale per block) instead of an array; :func:`rmsprop_jax.state_as_float32` reads any
    state back as float32 arrays in the params' structure.

    With ``pack_small_leaves=True`` each of ``nu``, ``mu`` and ``trace`` is a ``Packed``
    node instead: one array per group of small same-shape leaves, stacked on a new
    leading axis (:func:`rmsprop_jax.packing_plan` shows the groups; the view above
    reads it per leaf).

    Every state carries its ``plan``: what ``init`` decided for each leaf (storage, layout,
    weight-decay flag), kept as static data with no arrays (nothing of it is checkpointed).

    Attributes:
      count: Number of updates applied so far (``int32`` scalar, saturating).
        Present only where it is needed: with ``bias_correction``, with a schedule
        as learning rate, or with a 16-bit or 8-bit ``state_dtype`` (it keys the
        stochastic rounding). Otherwise ``None``.
      nu: Exponential moving average of the squared gradient, ``E[g^2]``
        (``|g|^2`` for complex gradients), one real array per parameter. For a
        centered 8-bit leaf it holds the variance ``E[g^2] - E[g]^2`` itself.
      mu: Exponential moving average of the gradient, ``E[g]``, when
        ``centered=True``; otherwise ``None``.
      trace: Momentum buffer when ``momentum`` is not ``None``; otherwise
        ``None``. It holds the velocity in the descent direction: the
        accumulated ``lr * g / rms`` (``lr_in_momentum=True``, as TF and Keras
        store it) or ``g / rms`` (``lr_in_momentum=False``, as PyTorch stores it).
      plan: How each leaf's state is kept, decided once by ``init``: a pytree node without
        arrays (its ``repr`` summarizes it; :func:`rmsprop_jax.state_report` prints it per
        leaf). ``update``, the views and :func:`rmsprop_jax.convert_state` read it.

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> tx = rmsprop_jax.rmsprop(0.1, momentum=0.9)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> _, state = tx.update({"w": jnp.array([1.0, -2.0])}, state, params)
      >>> print(state.count, state.nu["w"], state.mu, state.trace["w"])
      None [0.1 0.4] None [ 0.31622776 -0.31622776]
    """

    count: jax.Array | None
    nu: optax.Updates | Packed
    mu: optax.Updates | Packed | None
    trace: optax.Updates | Packed | None
    plan: StatePlan | Any = None
