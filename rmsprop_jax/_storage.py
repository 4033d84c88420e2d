"""How one state array is kept: in a float dtype, or as 8-bit codes with block scales.

The step's arithmetic (:mod:`rmsprop_jax._leaf_update`) sees every state array through a
:class:`FloatStorage` or a :class:`BlockStorage`: ``load`` returns the stored values in
the compute dtype, ``keep`` stores a new value and returns it as stored. Neither computes
anything of the step: ``keep`` is told how the new value was formed
(``weight * old + factor * term``) only so that the 8-bit storage can bound each block's scale
without a reduction over the new value (``benchmarks/NOTES.md``: on XLA:CPU that
reduction costs more than the whole step).

Which storage a leaf gets (:func:`initial`):

- ``state_dtype`` ``None`` or a float dtype: the policy of :mod:`rmsprop_jax._dtypes`.
- ``state_dtype="8bit"``: :class:`BlockStorage` where :func:`_storage_8bit.block_layout`
  finds blocks (at least 4096 entries, and 16 x 16 tiles or runs of 256 that fit each
  shard where the sharding is visible); every other leaf keeps the default policy's dtype
  (float32, float64 for float64 params). Complex params are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _storage_8bit as codec
from rmsprop_jax._dtypes import EIGHT_BIT
from rmsprop_jax._storage_8bit import Quantized

Stored = jax.Array | Quantized
"""One state array as the state keeps it."""

Scalar = float | jax.Array
"""A hyperparameter's value: a Python number, or an array (traced under ``inject_hyperparams``)."""


class Addend(NamedTuple):
    """What a moving average adds to ``weight * old``: ``factor * term``."""

    factor: Scalar | None
    """Non-negative, or ``None`` for 1."""
    term: jax.Array
    roots: tuple[Stored, ...] = ()
    """Where ``term`` is ``|root|^2``: arrays whose magnitudes sum to at least ``|root|``
    (``g``, or ``g`` and the stored ``mu`` for ``g - mu``), else empty."""
    bound: Scalar | None = None
    """An upper bound of ``|term|`` known without looking at it, else ``None``."""


@dataclasses.dataclass(frozen=True)
class FloatStorage:
    """A state array kept as an array of ``dtype`` (16-bit dtypes with stochastic rounding)."""

    dtype: jnp.dtype

    lossy: ClassVar[bool] = False
    """Whether the stored values carry far more rounding error than float32 (see :class:`BlockStorage`)."""

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array:
        assert not isinstance(stored, Quantized)
        return dtypes.cast(stored, compute)

    def store(self, value: jax.Array, seed: jax.Array | None) -> jax.Array:
        """``value`` stored afresh (16-bit dtypes stochastically rounded when ``seed`` is given)."""
        return dtypes.store(value, self.dtype, seed)

    def keep(
        self, value: jax.Array, seed: jax.Array | None, *, previous: Stored, weight: Scalar, addend: Addend
    ) -> tuple[Stored, jax.Array]:
        del previous, weight, addend
        stored = self.store(value, seed)
        return stored, dtypes.cast(stored, value.dtype)


@dataclasses.dataclass(frozen=True)
class BlockStorage:
    """A state array kept as 8-bit codes and one float32 scale per block (:mod:`_storage_8bit`).

    ``keep`` bounds each block's new scale by ``weight * old scale + factor * max |term|``, an
    upper bound of every new entry (each old entry is at most its old scale), so the
    encode needs no pass over the new value; the scale is then not the exact block
    maximum but at most that bound (the codes' relative precision does not depend on it).
    """

    layout: codec.Layout
    fmt: codec.Format

    lossy: ClassVar[bool] = True

    @property
    def dtype(self) -> jnp.dtype:
        """The dtype the codes decode to."""
        return jnp.dtype(jnp.float32)

    def load(self, stored: Stored, compute: jnp.dtype) -> jax.Array:
        assert isinstance(stored, Quantized)
        return dtypes.cast(codec.decode(stored, self.layout, self.fmt), compute)

    def store(self, value: jax.Array, seed: jax.Array | None) -> Stored:
        """``value`` stored afresh, each block's scale its exact maximum."""
        return codec.encode(dtypes.cast(value, jnp.float32), self.layout, self.fmt, seed)

    def keep(
        self, value: jax.Array, seed: jax.Array | None, *, previous: Stored, weight: Scalar, addend: Addend
    ) -> tuple[Stored, jax.Array]:
        assert isinstance(previous, Quantized)
        # max |factor * term| per block, taken over the input the term came from where there is one:
        # XLA:CPU fuses a reduction over an input (g) and materializes one over a computed array that
        # the step also uses, at a measured 1.5x the whole step's time (benchmarks/NOTES.md).
        if addend.bound is not None:
            maxima = addend.bound
        elif not addend.roots:
            maxima = codec.block_maxima(dtypes.cast(addend.term, jnp.float32), self.layout)
        else:  # a stored root's scale bounds it per block (same leaf, same layout); an array's maxima do
            root_maxima = [
                root.scale
                if isinstance(root, Quantized)
                else codec.block_maxima(dtypes.cast(jnp.abs(root), jnp.float32), self.layout)
                for root in addend.roots
            ]
            maxima = jnp.square(sum(root_maxima[1:], root_maxima[0]))
        bound = weight * previous.scale + (maxima if addend.factor is None else addend.factor * maxima)
        stored, kept = codec.encode_with_value(dtypes.cast(value, jnp.float32), self.layout, self.fmt, seed, bound)
        return stored, dtypes.cast(kept, value.dtype)


Storage = FloatStorage | BlockStorage


def _is_quantized_mapping(x: object) -> bool:
    """A :class:`Quantized` that a framework rebuilt as a mapping (Flax NNX under ``nnx.jit`` does)."""
    return isinstance(x, Mapping) and set(x.keys()) == set(Quantized._fields)


def is_stored_leaf(x: object) -> bool:
    """``is_leaf`` for state trees: a :class:`Quantized` array is one leaf of the params' tree."""
    return isinstance(x, Quantized) or _is_quantized_mapping(x)


def as_stored(x: object) -> Stored:
    """A state tree's leaf (under :func:`is_stored_leaf`) as a :class:`Quantized` or an array."""
    if _is_quantized_mapping(x):
        assert isinstance(x, Mapping)
        return Quantized(x["codes"], x["scale"])
    assert isinstance(x, (Quantized, jax.Array)) or hasattr(x, "shape"), type(x)
    return x  # pyright: ignore[reportReturnType]


def shape_of(stored: Stored) -> tuple[int, ...]:
    """The shape of the param a stored array belongs to."""
    return tuple(stored.codes.shape) if isinstance(stored, Quantized) else tuple(stored.shape)


def dtype_of(stored: Stored) -> jnp.dtype:
    """The dtype a stored array's values have when loaded exactly (float32 for 8-bit codes)."""
    return jnp.dtype(jnp.float32) if isinstance(stored, Quantized) else jnp.dtype(stored.dtype)


def leaves_of(treedef: Any, tree: object) -> list[Stored]:
    """A state field's stored arrays, one per leaf of the params' ``treedef``."""
    return [as_stored(x) for x in treedef.flatten_up_to(tree)]


def storage_of(stored: Stored, signed: bool) -> Storage:
    """The storage that wrote ``stored`` (``signed``: ``mu`` or the momentum buffer)."""
    if isinstance(stored, Quantized):
        return BlockStorage(codec.layout_of(stored), codec.SIGNED if signed else codec.UNSIGNED)
    return FloatStorage(jnp.dtype(stored.dtype))


def zeros_sharded_like(param: jax.Array) -> jax.Array:
    """Zeros shaped like ``param`` that keep its sharding, eagerly and under ``jax.jit``.

    They are computed from ``param`` (``|param * 0|``, with the NaN of ``inf * 0`` and
    ``nan * 0`` replaced) so that XLA's sharding propagation gives them ``param``'s
    sharding. A constant such as ``jnp.zeros_like`` has no input to propagate from:
    under ``jax.jit`` on a mesh with Auto axes it lands on one device. The result is
    real (``abs``), exactly +0 everywhere.
    """
    zero = jnp.abs(param * 0)
    return jnp.where(jnp.isnan(zero), jnp.zeros((), zero.dtype), zero)


def initial(param: jax.Array, fill: Scalar, signed: bool, state_dtype: jnp.dtype | str | None) -> Stored:
    """A state array for ``param`` holding ``fill`` everywhere, in the storage ``state_dtype`` gives it.

    ``signed``: ``mu`` or the momentum buffer (complex for complex params), else ``nu`` (real).
    """
    if state_dtype == EIGHT_BIT:
        layout = codec.block_layout(tuple(param.shape), codec.shard_shape(param))
        if layout is not None:
            block = BlockStorage(layout, codec.SIGNED if signed else codec.UNSIGNED)
            filled = (zeros_sharded_like(param).astype(jnp.float32) + fill).astype(jnp.float32)
            return block.store(filled, jnp.uint32(0))
        state_dtype = None
    assert not isinstance(state_dtype, str)
    storage = dtypes.real_state_dtype(param.dtype, state_dtype)
    dtype = dtypes.like_param(param.dtype, storage) if signed else storage
    return (zeros_sharded_like(param) + fill).astype(dtype)
