"""The optimizer state of :func:`rmsprop_jax.rmsprop` and :func:`rmsprop_jax.scale_by_rms`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax


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


class InGroup(NamedTuple):
    """Where a packed leaf's own array would be: its state is a row of a stacked group.

    An empty node (no arrays, like ``optax.EmptyState``), so serializers store nothing for it.
    """


class PackedGroups(NamedTuple):
    """One state field in the packed layout (``pack_small_leaves=True``), arrays only.

    Attributes:
      per_leaf: The params' tree: each leaf that is not packed holds its own array (float, or a
        :class:`rmsprop_jax.Quantized` pair), each packed leaf an :class:`InGroup` marker.
      stacked: One array per group of packed leaves, keyed by the group's members: the leaf
        numbers (in the params' leaf order) joined by ``_``, e.g. ``"3_5_7"``; the members'
        arrays stacked on a new leading axis in that order.
    """

    per_leaf: Any
    stacked: dict[str, jax.Array]


class RmsPropState(NamedTuple):
    """State of :func:`rmsprop_jax.rmsprop` and :func:`rmsprop_jax.scale_by_rms`.

    Arrays only, in optax's form: it can be jitted, vmapped and scanned, saved by Orbax,
    ``flax.serialization`` (msgpack), pickle or as Flax NNX pure dictionaries, and read by
    ``optax.tree`` utilities. Fields a configuration does not use are ``None`` (an empty
    pytree), so a state's tree structure tells which variant built it. Everything ``update``
    needs to know of a leaf's storage it reads from the arrays themselves (dtype; 8-bit codes
    and scales, whose shapes give the block layout).

    With ``state_dtype="8bit"`` each quantized leaf of ``nu``, ``mu`` and ``trace`` is a
    ``Quantized(codes, scales)`` pair (``uint8`` codes shaped like the param, one float32
    scale per block) instead of an array; :func:`rmsprop_jax.state_as_float32` reads any
    state back as float32 arrays in the params' structure.

    With ``pack_small_leaves=True``, where some leaves pack, each of ``nu``, ``mu`` and
    ``trace`` is a ``PackedGroups(per_leaf, stacked)`` pair: the params' tree with the packed
    leaves marked, and one stacked array per group (:func:`rmsprop_jax.packing_plan` shows
    the groups; the view above reads it per leaf).

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
    nu: optax.Updates | PackedGroups
    mu: optax.Updates | PackedGroups | None
    trace: optax.Updates | PackedGroups | None
