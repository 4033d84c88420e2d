"""The state dtype policy and the rounding that stores a state in it.

Policy: the state of a float16 or bfloat16 parameter is float32 unless
``state_dtype`` says otherwise; the state of a float32 or float64 parameter has the
parameter's dtype; a complex parameter's second moment is real, its first moment
and momentum buffer complex, at the policy's precision. The arithmetic of a step
runs in at least float32, whatever the storage dtype. A 16-bit state is written
with unbiased stochastic rounding, so small increments are not lost to
round-to-nearest (which freezes an average at decay 0.999 once
``(1 - decay) * g**2`` falls under half an ulp of it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

StateDtype = str | jax.typing.DTypeLike | None
"""One ``state_dtype`` value: ``None``, a floating dtype, its name, or another storage kind's name
(``"8bit"``; the kinds are registered in :mod:`rmsprop_jax._storage_kinds`)."""

ResolvedStateDtype = jnp.dtype | str | None
"""A validated ``state_dtype`` value (:func:`rmsprop_jax._storage_kinds.resolve`)."""

_LOW_PRECISION = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def real_state_dtype(param_dtype: jax.typing.DTypeLike, state_dtype: jnp.dtype | None) -> jnp.dtype:
    """Real dtype in which the state of a parameter of ``param_dtype`` is stored."""
    if state_dtype is not None:
        return state_dtype
    real = jnp.finfo(param_dtype).dtype  # complex64 -> float32, complex128 -> float64
    return jnp.dtype(jnp.float32) if real in _LOW_PRECISION else real


@functools.cache
def compute_dtype(param_dtype: jax.typing.DTypeLike, storage: jnp.dtype) -> jnp.dtype:
    """Real dtype in which a step's arithmetic runs: at least float32."""
    return jnp.promote_types(jnp.promote_types(jnp.finfo(param_dtype).dtype, storage), jnp.float32)


@functools.cache
def like_param(param_dtype: jax.typing.DTypeLike, real: jnp.dtype) -> jnp.dtype:
    """``real`` for a real parameter; the complex dtype of that precision otherwise."""
    if jnp.issubdtype(param_dtype, jnp.complexfloating):
        return jnp.promote_types(real, jnp.complex64)
    return real


def cast(x: jax.Array, dtype: jax.typing.DTypeLike) -> jax.Array:
    """``x.astype(dtype)``, skipped when ``x`` already has that dtype (saves trace time per leaf)."""
    return x if x.dtype == dtype else x.astype(dtype)


def needs_stochastic_rounding(dtype: jnp.dtype | None) -> bool:
    """Whether a float state stored in ``dtype`` loses precision against float32 (16-bit dtypes)."""
    return dtype is not None and dtype in _LOW_PRECISION


def _hash32(x: jax.Array) -> jax.Array:
    """A uint32 integer hash with good avalanche (Wellons' "lowbias32")."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def rounding_seed(count: jax.Array, leaf: int | Sequence[int], field: int) -> jax.Array:
    """The uint32 seed of one stored state array at one step.

    Distinct for each step ``count``, leaf index and state field (``0``: nu,
    ``1``: mu, ``2``: trace), so no two roundings share random bits. Given a sequence
    of leaf indices (a packed group's members), one seed per leaf, each equal to that
    leaf's own seed: a packed state draws the same bits as the per-leaf one.
    """
    streams = (
        [(index * 3 + field) & 0xFFFFFFFF for index in leaf]
        if isinstance(leaf, Sequence)
        else ((leaf * 3 + field) & 0xFFFFFFFF)
    )
    stream = _hash32(jnp.asarray(streams, jnp.uint32) ^ jnp.uint32(0x5BD1E995))
    return _hash32(jnp.asarray(count).astype(jnp.uint32) ^ stream)


def random_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 random bits from a counter-based hash of each element's index.

    A few integer operations per element that fuse into the update (``jax.random``
    with threefry costs several times the whole memory-bound step on a CPU).
    """
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return _hash32(index ^ _hash32(seed))


def rounding_bits(seed: jax.Array, shape: tuple[int, ...], count: int) -> jax.Array:
    """``count`` uniform random bits per element (uint32, in its low bits) for an 8-bit encode.

    The top ``count`` bits of ``(index ^ mix(seed)) * 0x9E3779B1``: one xor, one multiply and
    one shift per element (a third of :func:`random_bits`'s work). For each element the bits are
    uniform over steps (the mixed seed is, the xor and the odd multiplier are bijections), and
    within a step no two elements share their 32-bit product (a bijection of the index); neighbours'
    bits form a low-discrepancy sequence rather than independent draws, which keeps every
    rounding unbiased. Keyed by the global index, so a sharded step draws the same bits as one
    device.
    """
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return ((index ^ _hash32(seed)) * jnp.uint32(0x9E3779B1)) >> (32 - count)


def store(value: jax.Array, dtype: jnp.dtype, seed: jax.Array | None) -> jax.Array:
    """Casts ``value`` to ``dtype``: stochastically rounded when narrowing to 16 bits.

    Stochastic rounding picks the representable neighbour on the far side of
    ``value`` with probability ``residual / gap``, so the stored value is
    unbiased: ``E[store(x)] == x``. Float32 to bfloat16 adds 16 random bits
    below the bfloat16 mantissa and truncates (exact probabilities: float32 has
    just those 16 bits more); other narrowings compare a uniform number in
    ``[0, 1)`` with 24 random bits against ``residual / gap``. Non-finite values
    round to nearest.

    Its derivative is the cast's (straight-through: the rounding is unbiased, so the
    stored value's expected derivative is the value's), so that ``jax.grad`` through an
    update with a 16-bit state sees the step's derivative rather than zero.

    Args:
      value: A real array in the compute dtype.
      dtype: The storage dtype.
      seed: A uint32 scalar (see :func:`rounding_seed`); ``None`` rounds to nearest.
    """
    if value.dtype == dtype or seed is None or dtype not in _LOW_PRECISION:
        return cast(value, dtype)
    return _stochastically_rounded(value, seed, dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _stochastically_rounded(value: jax.Array, seed: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """:func:`store`'s stochastic rounding of ``value`` to a 16-bit ``dtype``."""
    bits = random_bits(seed, value.shape)
    if value.dtype == jnp.float32 and dtype == jnp.bfloat16:
        # One elementwise chain (no second consumer of `value`), so that XLA fuses it
        # into the update. Non-finite values get no noise; a NaN keeps its quiet bit.
        finite = jnp.isfinite(value)
        raised = jax.lax.bitcast_convert_type(value, jnp.uint32) + jnp.where(finite, bits >> 16, 0)
        kept = (raised & jnp.uint32(0xFFFF0000)) | jnp.where(jnp.isnan(value), jnp.uint32(0x00400000), 0)
        return jax.lax.bitcast_convert_type(kept, jnp.float32).astype(dtype)
    nearest = value.astype(dtype)
    residual = value - nearest.astype(value.dtype)
    toward = jnp.where(residual > 0, jnp.inf, -jnp.inf).astype(dtype)
    neighbour = jnp.nextafter(nearest, toward)
    probability = residual / (neighbour.astype(value.dtype) - nearest.astype(value.dtype))
    uniform = ((bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)).astype(value.dtype)
    return jnp.where(uniform < probability, neighbour, nearest)


@_stochastically_rounded.defjvp
def _stochastically_rounded_jvp(
    dtype: jnp.dtype, primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    value, seed = primals
    return _stochastically_rounded(value, seed, dtype), tangents[0].astype(dtype)
