"""4-bit block-wise storage of one non-negative state array (``nu``): the codec (encode and decode only).

Blocks are the 8-bit codec's (:func:`rmsprop_jax._codec_8bit.block_layout`), each cut in two halves
along its last axis (a 16 x 16 tile's columns 0-7 and 8-15, a run's two halves, a box's last extent
halved), with one float32 scale per half: at most 128 entries per scale, 0.5 + 4/128 bytes per entry.

Codes: 4 bits, powers of two without zero. Code ``c`` in 1..15 holds ``2**(c - 15)`` of its half's
scale, from ``2**-14`` to 1 (4.2 decades); code 0 appears only in an all-zero half (it decodes to 0
as any code does with a zero scale). An entry under ``2**-14`` of its half's scale is stored as
``2**-14`` of it, rounded up: a square average is never stored as 0 (``1 / sqrt(v)`` of a zero is
what a linear map with a zero code blows up), at the cost of raising averages under ``2**-14`` of
their half's largest (their steps shorten). Between two codes the rounding is stochastic and
unbiased: the 8-bit codec's integer path (:func:`rmsprop_jax._codec_8bit.magnitude_code`) with no
mantissa bit, where the random bits below the exponent carry into it with the probability of the
value's position in its binade. ``benchmarks/NOTES.md``, "4-bit: which code map", has
the measurements behind this map.

Packing: along the last axis, cut into chunks of :func:`chunk` entries (its narrowest even shard:
the axis over 8, 4 or 2, the largest of these that divides it), entry ``j`` of a chunk's first half
and entry ``j`` of its second half share a byte (the low and the high nibble). The codes are the
array's shape with the last axis halved, so they shard as the param does along every axis, and a
byte's two entries lie in one shard of any even sharding. Where a chunk is a multiple of 8, the
bytes are packed four at a time as uint32 words (``benchmarks/NOTES.md``, "4-bit: the step's
passes").

Which layouts (:func:`fits`): tiles; runs along the last axis alone that divide the row (no padded
run); boxes; each with a block's last extent a multiple of 4 (each half splits into quarters, the
bulk of the outlier cap, :mod:`rmsprop_jax._storage_4bit`), an even chunk, and, where the
sharding is visible, shards of the last axis that hold whole chunks. Another
layout keeps 8 bits (a 1000-wide classifier: its narrowest even shard, 125, is odd).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rmsprop_jax import _codec_8bit as blocks
from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _placement as placement
from rmsprop_jax._codec_8bit import LARGEST, Format, Layout

FORMAT = Format(4, 0, signed=False)
"""The 4-bit code: an exponent of 4 bits and no mantissa (code 0 is the format's zero, never stored
for a nonzero value)."""
SMALLEST = 2.0**-14
"""The smallest nonzero code's value, as a fraction of its half's scale."""


class Nibbles(NamedTuple):
    """One state array in 4 bits: what ``state.nu[...]`` holds for a leaf ``state_dtype="4bit"`` reaches.

    Read its values with :func:`rmsprop_jax.state_as_float32`; :func:`rmsprop_jax.state_report`
    says which leaves are 4-bit.

    Attributes:
      nibbles: ``uint8``, the array's shape with the last axis halved: two 4-bit codes per byte
        (entry ``j`` of a chunk's first half in the low nibble, of its second half in the high one;
        a chunk is the last axis's narrowest even shard, :func:`chunk`).
      half_scales: float32, the 8-bit layout's block scales' shape plus a last axis of 2: one scale
        per half block, at least its largest entry.

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> state = rmsprop_jax.rmsprop(1e-3, state_dtype="4bit").init({"w": jnp.ones((64, 64))})
      >>> q = state.nu["w"]
      >>> type(q).__name__, q.nibbles.dtype, q.nibbles.shape, q.half_scales.shape
      ('Nibbles', dtype('uint8'), (64, 32), (8, 8, 2))
    """

    nibbles: jax.Array
    half_scales: jax.Array


def width(layout: Layout) -> int:
    """A block's extent along the array's last axis."""
    if layout.kind == "tiles":
        return blocks.TILE
    return layout.block[-1] if layout.kind == "boxes" else layout.run_length


def chunk(last: int) -> int:
    """The span of the last axis whose halves pair up into bytes: its narrowest even shard (the
    axis over 8, 4 or 2, the largest of these that divides it; the axis itself where none does)."""
    return next((last // ways for ways in (8, 4, 2) if last % ways == 0), last)


def fits(layout: Layout | None, shape: tuple[int, ...], local_shape: tuple[int, ...] | None = None) -> bool:
    """Whether an array of ``shape`` blocked by ``layout`` keeps 4-bit codes (the module docstring);
    ``local_shape``: one shard's shape where the sharding is visible."""
    if layout is None or width(layout) % 4 or chunk(shape[-1]) % 2:
        return False
    if local_shape is not None and local_shape[-1] % chunk(shape[-1]):
        return False
    if layout.kind == "runs":
        return layout.run_axes == 1 and shape[-1] % layout.run_length == 0
    return True


def _with_last(x: jax.Array, shape: tuple[int, ...], last_spec_axes: int) -> jax.Array:
    """``x`` reshaped to ``shape``, whose leading axes are ``x``'s but the last; the last's sharding
    (where explicit) goes to the first of the ``last_spec_axes`` axes that replace it."""
    spec = placement.explicit_spec(x)
    new_spec = None if spec is None else (*spec[:-1], spec[-1], *(None,) * (last_spec_axes - 1))
    return placement.reshaped(x, shape, new_spec)


def _halved(x: jax.Array, layout: Layout, parts: int = 2) -> jax.Array:
    """:func:`rmsprop_jax._codec_8bit.blocked` with the block's last extent cut into ``parts``
    (an axis of ``parts`` before the entries of each part)."""
    b = blocks.blocked(x, layout)
    spec = placement.explicit_spec(b)
    return placement.reshaped(
        b, (*b.shape[:-1], parts, b.shape[-1] // parts), None if spec is None else (*spec[:-1], None, None)
    )


def _half_axes(layout: Layout) -> tuple[int, ...]:
    """The axes of :func:`_halved`'s view that a half's reduction spans (the half axis, -2, is kept)."""
    return tuple(axis - 1 if axis < -1 else -1 for axis in blocks.block_axes(layout))


def _unpacked(packed: jax.Array, layout: Layout) -> jax.Array:
    """The int32 codes, the array's shape, of packed nibbles: each chunk's low nibbles, then its high
    ones (one concatenation, which XLA:CPU fuses into each reader; ``benchmarks/NOTES.md``, "4-bit:
    the step's passes")."""
    *lead, half_row = packed.shape
    w = chunk(2 * half_row)
    groups = _with_last(packed, (*lead, half_row * 2 // w, 1, w // 2), 3).astype(jnp.int32)
    spec = placement.explicit_spec(groups)
    pair = jnp.concatenate([groups & 0xF, groups >> 4], axis=-2)
    pair = placement.reshaped(pair, pair.shape, None if spec is None else (*spec[:-3], spec[-3], None, None))
    return placement.reshaped(pair, (*lead, half_row * 2), None if spec is None else (*spec[:-3], spec[-3]))


def _packed(codes: jax.Array, layout: Layout) -> jax.Array:
    """Int codes (0 to 15) of the array's shape packed two per byte (the module docstring).

    The codes are written out as bytes first (an optimization barrier), then packed four bytes at a
    time as uint32 words: a code under 16 shifted left by 4 stays inside its byte. XLA:CPU ran the
    same packing fused into the encode, or on bytes, 2-5x slower (``benchmarks/NOTES.md``, "4-bit:
    the step's passes")."""
    *lead, row = codes.shape
    w = chunk(row)
    spec = placement.explicit_spec(codes)
    if w % 8:  # half chunks of whole words only; else byte by byte (slower, as measured)
        pair = _with_last(codes, (*lead, row // w, 2, w // 2), 3)
        joined = (pair[..., 0, :] | (pair[..., 1, :] << 4)).astype(jnp.uint8)
        return placement.reshaped(joined, (*lead, row // 2), None if spec is None else spec)
    as_bytes = jax.lax.optimization_barrier(codes.astype(jnp.uint8))
    words_spec = None if spec is None else (*spec[:-1], spec[-1], None, None, None)
    pair = placement.reshaped(as_bytes, (*lead, row // w, 2, w // 8, 4), words_spec)
    words = jax.lax.bitcast_convert_type(pair, jnp.uint32)
    joined = jax.lax.bitcast_convert_type(words[..., 0, :] | (words[..., 1, :] << 4), jnp.uint8)
    joined_spec = None if spec is None else (*spec[:-1], spec[-1], None, None)
    return placement.reshaped(joined, (*lead, row // 2), None if joined_spec is None else joined_spec[:-2])


def _largest(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """The largest entry of non-negative ``x`` over ``axes`` (removed): from
    :data:`rmsprop_jax._codec_8bit.PARALLEL_MAXIMA` entries on as elementwise maxima of halves, which
    XLA:CPU runs on every core, below as reductions (the same maxima, bit for bit)."""
    largest = blocks.max_by_halving if x.size >= blocks.PARALLEL_MAXIMA else blocks.max_by_reduction
    for axis in sorted((axis % x.ndim for axis in axes), reverse=True):
        x = largest(x, axis)
    return x


def half_maxima(x: jax.Array, layout: Layout, parts: int = 2) -> jax.Array:
    """Each half block's largest magnitude (``parts=4``: each quarter's): the 8-bit layout's scales'
    shape plus a last axis of ``parts``. A NaN counts as 0 (it must not poison a scale)."""
    magnitude = jnp.abs(_halved(x, layout, parts))
    # Non-negative floats order as their int32 bit patterns (the 8-bit codec's half_maxima).
    bits = jax.lax.bitcast_convert_type(jnp.where(jnp.isnan(magnitude), 0, magnitude), jnp.int32)
    return jax.lax.bitcast_convert_type(_largest(bits, _half_axes(layout)), jnp.float32)


def stored_quarter_maxima(q: Nibbles, layout: Layout) -> jax.Array:
    """Each quarter block's largest magnitude as ``q`` holds it (shape: :attr:`Nibbles.half_scales`'s
    plus a last axis of 2, a half's two quarters), read from the codes (they order as their values)."""
    codes = _halved(_unpacked(q.nibbles, layout), layout, 4)
    largest = _largest(codes, _half_axes(layout))  # a quarter's axes: a half's
    largest = largest.reshape(*largest.shape[:-1], 2, 2)
    return blocks.magnitude(largest, FORMAT) * q.half_scales[..., None]


def scales_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    """The shape of :attr:`Nibbles.half_scales` for an array of ``shape``."""
    return (*blocks.scales_shape(shape, layout), 2)


def packed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of :attr:`Nibbles.nibbles` for an array of ``shape``."""
    return (*shape[:-1], shape[-1] // 2)


def layout_of(nibbles_shape: tuple[int, ...], half_scales_shape: tuple[int, ...]) -> Layout:
    """The layout of a :class:`Nibbles` array, read from its arrays' shapes (the array's last axis is
    twice the nibbles'; the block scales are the half scales less their last axis).

    Raises:
      ValueError: the shapes fit no 4-bit layout.
    """
    shape = (*tuple(nibbles_shape)[:-1], 2 * tuple(nibbles_shape)[-1]) if len(nibbles_shape) else ()
    if not shape or tuple(half_scales_shape)[-1:] != (2,):
        layout = None
    else:
        try:
            layout = blocks.layout_of(shape, tuple(half_scales_shape)[:-1])
        except ValueError:
            layout = None
    if layout is None or not fits(layout, shape):
        raise ValueError(
            f"4-bit codes of shape {tuple(nibbles_shape)} with half scales of shape {tuple(half_scales_shape)} fit "
            "no block layout: this state's arrays were not written by rmsprop_jax for these params"
        )
    return layout


def encode(x: jax.Array, layout: Layout, seed: jax.Array | None, scale: jax.Array | None = None) -> Nibbles:
    """Quantizes a non-negative float32 array half block by half block (the module docstring).

    Args:
      x: float32, non-negative (magnitudes are taken; inf is clamped as in the 8-bit codec).
      layout: One that :func:`fits`.
      seed: uint32 scalar keying the rounding (each entry draws its bits from its global index);
        ``None`` rounds to the nearer code in value.
      scale: The half blocks' scales (:attr:`Nibbles.half_scales`' shape), each at least its half's
        largest entry (larger entries are clipped to it); default the halves' maxima.

    Derivatives: the codes are integers; each half scale's tangent is the least-squares fit of
    ``x``'s tangent by a multiple of the half's values (as in the 8-bit codec).
    """
    if seed is None:
        return _encoded(x, layout, seed, scale)
    return _encoded_straight_through(x, seed, scale, layout)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _encoded_straight_through(x: jax.Array, seed: jax.Array, scale: jax.Array | None, layout: Layout) -> Nibbles:
    return _encoded(x, layout, seed, scale)


@_encoded_straight_through.defjvp
def _encoded_straight_through_jvp(
    layout: Layout, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[Nibbles, Nibbles]:
    quantized = _encoded(primals[0], layout, primals[1], primals[2])
    value = decode(quantized, layout)
    halved_value, axes = _halved(value, layout), _half_axes(layout)
    fit = jnp.sum(halved_value * _halved(tangents[0], layout), axis=axes)
    norm = jnp.sum(jnp.square(halved_value), axis=axes)
    scale_tangent = quantized.half_scales * jnp.where(norm > 0, fit / jnp.where(norm > 0, norm, 1), 0)
    codes_tangent = np.zeros(quantized.nibbles.shape, jax.dtypes.float0)
    return quantized, Nibbles(codes_tangent, scale_tangent)  # pyright: ignore[reportArgumentType]


def _encoded(x: jax.Array, layout: Layout, seed: jax.Array | None, scale: jax.Array | None) -> Nibbles:
    """:func:`encode`'s body."""
    halves = _halved(x, layout)
    magnitudes = jnp.minimum(jnp.abs(halves), LARGEST)
    axes = _half_axes(layout)
    if scale is None:
        scale = jnp.expand_dims(jnp.minimum(half_maxima(x, layout), LARGEST), axes)
    else:
        scale = jnp.expand_dims(jnp.minimum(scale, LARGEST), axes)
    inverse = jnp.where(scale > 0, 1 / jnp.where(scale > 0, scale, 1), 0)
    y = jnp.clip(magnitudes * inverse, SMALLEST, 1)
    shift = 23 - FORMAT.mantissa_bits
    if seed is None:  # to nearest: half a code step in place of the random bits
        noise = jnp.uint32(1 << (shift - 1))
    else:
        noise = _halved(dtypes.rounding_bits(seed, x.shape, shift), layout)
    codes = blocks.magnitude_code(y, noise, FORMAT)
    whole = blocks.unblocked(_merged(codes), layout, x.shape)
    return Nibbles(_packed(whole, layout), jnp.squeeze(scale, axes))


def _merged(halved: jax.Array) -> jax.Array:
    """The inverse of :func:`_halved`'s last cut (back to :func:`rmsprop_jax._codec_8bit.blocked`'s view)."""
    spec = placement.explicit_spec(halved)
    return placement.reshaped(
        halved, (*halved.shape[:-2], math.prod(halved.shape[-2:])), None if spec is None else (*spec[:-2], None)
    )


def decode(q: Nibbles, layout: Layout) -> jax.Array:
    """The float32 array that ``q`` holds."""
    shape = (*q.nibbles.shape[:-1], 2 * q.nibbles.shape[-1])
    codes = _halved(_unpacked(q.nibbles, layout), layout)
    value = blocks.magnitude(codes, FORMAT) * jnp.expand_dims(q.half_scales, _half_axes(layout))
    return blocks.unblocked(_merged(value), layout, shape)


def filled_code(fill: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """The byte (two equal codes) and half scale of every entry of an array holding ``fill``
    everywhere: the scale ``|fill|``, the top code (code 1, which decodes to 0, for a 0 fill)."""
    magnitude = jnp.minimum(jnp.abs(jnp.asarray(fill, jnp.float32)), LARGEST)
    code = jnp.where(magnitude > 0, jnp.int32(FORMAT.largest_code), jnp.int32(1))
    return (code | (code << 4)).astype(jnp.uint8), magnitude


def filled(zeros: jax.Array, fill: jax.Array | float, layout: Layout) -> Nibbles:
    """``zeros + fill`` as :func:`filled_code` says, placed as ``zeros`` is (the param's shape)."""
    byte, scale = filled_code(fill)
    packed = _packed(zeros.astype(jnp.int32), layout).astype(jnp.uint8) + byte
    half_scales = half_maxima(zeros.astype(jnp.float32) + scale, layout)
    return Nibbles(packed, half_scales)
