"""8-bit block-wise storage of one state array: encode and decode only (issue 12, not wired in yet).

A quantized array is kept as ``uint8`` codes of the array's own shape (so the codes shard
as the parameter does) and one float32 scale per block, the block's largest magnitude.
Each entry is divided by its block's scale and stored as a small float built with integer
bit operations, stochastically rounded:

- non-negative arrays (the square average ``nu``): E5M3, 5 exponent and 3 mantissa bits
  with subnormals, from ``2**-33`` to 1 (10 decades) in steps of at most 1/8 of a binade;
- signed arrays (``mu``, the momentum buffer): a sign bit and E4M3, from ``2**-17`` to 1.

Why these maps: ``benchmarks/code_maps.py`` and ``benchmarks/NOTES.md`` (E5M3 keeps its
6.5% median noise for every gradient spread measured, where E4M4 runs out of range at 3
decades and a lookup map needs a table search that costs 150-190x the bit operations on
XLA:CPU). The block's largest entry is exact (it encodes to 1.0); rounding is unbiased
(random bits below the kept mantissa, then truncation); an all-zero block decodes to zeros.

Blocks (:func:`block_layout`): 16 x 16 tiles over the last two axes when both extents are
multiples of 16, else runs of 256 along the last axis when it is a multiple of 256; other
shapes, and arrays under 4096 entries, are not quantized. The block grid follows from the
shape alone, so it is the same eagerly, under ``jax.jit`` and on every mesh.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from rmsprop_jax import _dtypes as dtypes

MIN_SIZE = 4096  # smaller arrays keep a float32 state (their codes would save little)
TILE = 16
RUN = 256

Layout = Literal["tiles", "runs"]


class Format(NamedTuple):
    """A small float: ``exponent_bits`` + ``mantissa_bits`` (+ a sign bit when ``signed``) = 8."""

    exponent_bits: int
    mantissa_bits: int
    signed: bool

    @property
    def largest_code(self) -> int:
        """The code of 1.0, the largest magnitude kept (the block's maximum)."""
        return ((1 << self.exponent_bits) - 1) << self.mantissa_bits

    @property
    def bias(self) -> int:
        """float32's biased exponent of the format's exponent field 0."""
        return 127 - ((1 << self.exponent_bits) - 1)

    @property
    def subnormal_step(self) -> float:
        """The spacing of the codes below the smallest normal value."""
        return 2.0 ** (1 - ((1 << self.exponent_bits) - 1) - self.mantissa_bits)


UNSIGNED = Format(5, 3, signed=False)  # nu
SIGNED = Format(4, 3, signed=True)  # mu, momentum


class Quantized(NamedTuple):
    """One array in 8 bits.

    Attributes:
      codes: ``uint8``, the array's shape: the sign bit (signed formats) and the magnitude code.
      scale: float32, one per block: the block's largest magnitude.
    """

    codes: jax.Array
    scale: jax.Array


def block_layout(shape: tuple[int, ...]) -> Layout | None:
    """How an array of ``shape`` is blocked: ``"tiles"``, ``"runs"``, or ``None`` (kept in float32)."""
    if math.prod(shape) < MIN_SIZE:
        return None
    if len(shape) >= 2 and shape[-2] % TILE == 0 and shape[-1] % TILE == 0:
        return "tiles"
    if len(shape) >= 1 and shape[-1] % RUN == 0:
        return "runs"
    return None


def _blocked(x: jax.Array, layout: Layout) -> jax.Array:
    """``x`` with each block on its own axes: tiles ``(..., H/16, 16, W/16, 16)``, runs ``(..., W/256, 256)``."""
    if layout == "tiles":
        *lead, height, width = x.shape
        return x.reshape(*lead, height // TILE, TILE, width // TILE, TILE)
    *lead, width = x.shape
    return x.reshape(*lead, width // RUN, RUN)


def _block_axes(layout: Layout) -> tuple[int, ...]:
    return (-3, -1) if layout == "tiles" else (-1,)


def _magnitude_code(y: jax.Array, bits: jax.Array, fmt: Format) -> jax.Array:
    """``y`` in ``[0, 1]`` to its unbiased, stochastically rounded magnitude code (int32)."""
    shift = 23 - fmt.mantissa_bits
    raised = (jax.lax.bitcast_convert_type(y, jnp.uint32) + (bits & jnp.uint32((1 << shift) - 1))) >> shift
    normal = raised.astype(jnp.int32) - (fmt.bias << fmt.mantissa_bits)
    uniform = (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
    subnormal = jnp.floor(y / jnp.float32(fmt.subnormal_step) + uniform).astype(jnp.int32)
    code = jnp.where(normal >= (1 << fmt.mantissa_bits), normal, subnormal)
    return jnp.clip(code, 0, fmt.largest_code)


def _magnitude(code: jax.Array, fmt: Format) -> jax.Array:
    """The value in ``[0, 1]`` of a magnitude code (int32)."""
    shift = 23 - fmt.mantissa_bits
    normal = jax.lax.bitcast_convert_type(
        ((code + (fmt.bias << fmt.mantissa_bits)) << shift).astype(jnp.uint32), jnp.float32
    )
    return jnp.where(code >= (1 << fmt.mantissa_bits), normal, code.astype(jnp.float32) * fmt.subnormal_step)


def encode(x: jax.Array, layout: Layout, fmt: Format, seed: jax.Array, scale: jax.Array | None = None) -> Quantized:
    """Quantizes a float32 array block by block (see the module docstring).

    Args:
      x: Finite float32 values; non-negative for an unsigned ``fmt``.
      layout: From :func:`block_layout`.
      fmt: :data:`UNSIGNED` or :data:`SIGNED`.
      seed: uint32 scalar keying the rounding (:func:`rmsprop_jax._dtypes.rounding_seed`);
        each element draws its bits from its index, as the 16-bit state does.
      scale: The blocks' scales (the shape of :attr:`Quantized.scale`), each at least its
        block's largest magnitude (larger magnitudes are clipped to it); default the
        blocks' maxima, which are then stored exactly. An upper bound known without a
        pass over ``x`` spares XLA:CPU a reduction that costs more than the whole step
        (``benchmarks/NOTES.md``).

    Returns:
      The codes and the per-block scales.
    """
    blocked = _blocked(x, layout)
    magnitude = jnp.abs(blocked)
    if scale is None:
        scale = jnp.max(magnitude, axis=_block_axes(layout), keepdims=True)
    else:
        scale = jnp.expand_dims(scale, _block_axes(layout))
    y = jnp.where(scale > 0, jnp.minimum(magnitude / jnp.where(scale > 0, scale, 1), 1), 0)
    bits = _blocked(dtypes.random_bits(seed, x.shape), layout)
    code = _magnitude_code(y, bits, fmt)
    if fmt.signed:
        code = code | jnp.where(blocked < 0, 0x80, 0)
    return Quantized(code.astype(jnp.uint8).reshape(x.shape), jnp.squeeze(scale, _block_axes(layout)))


def decode(q: Quantized, layout: Layout, fmt: Format) -> jax.Array:
    """The float32 array that ``q`` holds."""
    code = _blocked(q.codes, layout).astype(jnp.int32)
    value = _magnitude(code & 0x7F if fmt.signed else code, fmt)
    if fmt.signed:
        value = jnp.where(code & 0x80, -value, value)
    scale = jnp.expand_dims(q.scale, _block_axes(layout))
    return (value * scale).reshape(q.codes.shape)
