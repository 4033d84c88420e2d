"""4-bit block-wise storage of one non-negative state array (``nu``): the codec (encode and decode only).

Blocks are the 8-bit codec's (:func:`rmsprop_jax._codec_8bit.block_layout`), or boxes of the same
rule's where those do not fit (:func:`plan`), each cut in two halves along the *paired* axis (the
last: a 16 x 16 tile's columns 0-7 and 8-15, a run's two halves, a box's last extent halved;
another: a box's extent along it halved), with one float32 scale per half: at most 128 entries per
scale, 0.5 + 4/128 bytes per entry.

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

Packing: along the paired axis, cut into chunks of :func:`chunk` entries (its narrowest even
shard: the axis over 8, 4 or 2, the largest of these that divides it), entry ``j`` of a chunk's
first half and entry ``j`` of its second half share a byte (the low and the high nibble). The
codes are the array's shape with the paired axis halved, then one unit axis for each axis after
it (:func:`packed_shape`: the stored shape says which axis is paired, so a state holds nothing
but arrays), so they shard as the param does along every axis, and a byte's two entries lie in
one shard of any even sharding. Where the last axis pairs in chunks that are a multiple of 8, the
bytes are packed four at a time as uint32 words (``benchmarks/NOTES.md``, "4-bit: the step's
passes").

Which layouts (:func:`fits`), along the last axis: tiles; runs along the last axis alone that
divide the row (no padded run); boxes; along another axis: boxes (:func:`as_box` reads tiles and
runs as the boxes they are); each with a block's extent along the paired axis a multiple of 4
(each half splits into quarters, the bulk of the outlier cap, :mod:`rmsprop_jax._storage_4bit`),
an even chunk, and, where the sharding is visible, shards of the paired axis that hold whole
chunks. An array no axis of which fits keeps 8 bits (a 200 x 1000 kernel: its narrowest even
shards, 25 and 125, are odd).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
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
      nibbles: ``uint8``, the array's shape with its paired axis halved (the last where it pairs),
        then one unit axis for each axis after the paired one: two 4-bit codes per byte (entry ``j``
        of a chunk's first half in the low nibble, of its second half in the high one; a chunk is
        the paired axis's narrowest even shard, :func:`chunk`).
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


def chunk(extent: int) -> int:
    """The span of the paired axis (of ``extent`` entries) whose halves pair up into bytes: its
    narrowest even shard (the axis over 8, 4 or 2, the largest of these that divides it; the axis
    itself where none does)."""
    return next((extent // ways for ways in (8, 4, 2) if extent % ways == 0), extent)


def fits(
    layout: Layout | None, shape: tuple[int, ...], local_shape: tuple[int, ...] | None = None, axis: int = -1
) -> bool:
    """Whether an array of ``shape`` blocked by ``layout`` keeps 4-bit codes paired along ``axis``
    (counted from the end; the module docstring); ``local_shape``: one shard's shape where the sharding
    is visible."""
    if layout is None or not -len(shape) <= axis < 0 or chunk(shape[axis]) % 2:
        return False
    if local_shape is not None and local_shape[axis] % chunk(shape[axis]):
        return False
    if axis != -1:
        return layout.kind == "boxes" and layout.block[axis] % 4 == 0
    if width(layout) % 4:
        return False
    if layout.kind == "runs":
        return layout.run_axes == 1 and shape[-1] % layout.run_length == 0
    return True


def as_box(layout: Layout, shape: tuple[int, ...]) -> Layout | None:
    """``layout`` as the boxes it is (tiles: 16 x 16 over the last two axes; runs along the last axis
    that divide it: one row's run), ``None`` for padded runs or runs over several axes."""
    ones = (1,) * len(shape)
    if layout.kind == "tiles":
        return Layout("boxes", block=(*ones[:-2], blocks.TILE, blocks.TILE))
    if layout.kind == "runs":
        whole = layout.run_axes == 1 and shape[-1] % layout.run_length == 0
        return Layout("boxes", block=(*ones[:-1], layout.run_length)) if whole else None
    return layout


def plan(
    layout: Layout | None, shape: tuple[int, ...], local_shape: tuple[int, ...] | None = None
) -> tuple[Layout, int] | None:
    """The layout and the paired axis (counted from the end) an array of ``shape`` keeps 4-bit codes
    in, given its 8-bit ``layout``, or ``None`` (it keeps 8 bits): the 8-bit layout paired along the last
    axis where that :func:`fits`; else along the last axis before it that fits, in the 8-bit blocks
    (as boxes); else along the last axis that fits in :func:`box`'s blocks; ``local_shape`` as in
    :func:`fits`."""
    if layout is None:
        return None
    if fits(layout, shape, local_shape):
        return layout, -1
    boxed = as_box(layout, shape)
    for axis in range(-2, -len(shape) - 1, -1):
        if boxed is not None and fits(boxed, shape, local_shape, axis):
            return boxed, axis
    for axis in range(-1, -len(shape) - 1, -1):
        own = box(shape, axis)
        if (
            own is not None
            and fits(own, shape, local_shape, axis)
            and (local_shape is None or blocks.shards_keep_blocks_whole(own, shape, tuple(local_shape)))
        ):
            return own, axis
    return None


@functools.cache
def box(shape: tuple[int, ...], axis: int) -> Layout | None:
    """The largest block of at most 256 entries whose extent along each axis divides that axis's
    narrowest even shard (as the 8-bit codec's boxes) and along ``axis`` is a multiple of 4, preferring
    longer extents along the trailing axes; ``None`` where it is under :data:`MIN_BOX` entries or
    ``axis``'s narrowest even shard is odd."""
    if chunk(shape[axis]) % 2:
        return None
    choices = [[d for d in range(1, min(chunk(n), blocks.RUN) + 1) if chunk(n) % d == 0] for n in shape]
    choices[axis] = [d for d in choices[axis] if d % 4 == 0]
    best: tuple[int, tuple[int, ...]] = (0, ())
    for block in itertools.product(*choices):
        size = math.prod(block)
        if size <= blocks.RUN and (size, block[::-1]) > (best[0], best[1][::-1]):
            best = (size, block)
    return Layout("boxes", block=tuple(int(b) for b in best[1])) if best[0] >= MIN_BOX else None


MIN_BOX = 32
"""The fewest entries in a block of :func:`box` (a scale per 16 entries: 0.75 B per entry, under any
8-bit block's 1 + 4/256)."""


def _with_last(x: jax.Array, shape: tuple[int, ...], last_spec_axes: int) -> jax.Array:
    """``x`` reshaped to ``shape``, whose leading axes are ``x``'s but the last; the last's sharding
    (where explicit) goes to the first of the ``last_spec_axes`` axes that replace it."""
    spec = placement.explicit_spec(x)
    new_spec = None if spec is None else (*spec[:-1], spec[-1], *(None,) * (last_spec_axes - 1))
    return placement.reshaped(x, shape, new_spec)


def _halved(x: jax.Array, layout: Layout, parts: int = 2, axis: int = -1) -> jax.Array:
    """:func:`rmsprop_jax._codec_8bit.blocked` with the block's extent along ``axis`` (the paired one)
    cut into ``parts`` (an axis of ``parts`` before the entries of each part)."""
    b = blocks.blocked(x, layout)
    spec = placement.explicit_spec(b)
    if axis == -1:
        return placement.reshaped(
            b, (*b.shape[:-1], parts, b.shape[-1] // parts), None if spec is None else (*spec[:-1], None, None)
        )
    at = 2 * (axis % x.ndim) + 1  # a box's extent along the paired axis, in the blocked view
    shape = (*b.shape[:at], parts, b.shape[at] // parts, *b.shape[at + 1 :])
    return placement.reshaped(b, shape, None if spec is None else (*spec[:at], None, None, *spec[at + 1 :]))


def _half_axes(layout: Layout, axis: int = -1) -> tuple[int, ...]:
    """The axes of :func:`_halved`'s view that a half's reduction spans (the half axis is kept)."""
    if axis == -1:
        return tuple(a - 1 if a < -1 else -1 for a in blocks.block_axes(layout))
    paired = axis % len(layout.block)
    return tuple(2 * i + 1 if i < paired else 2 * i + 2 for i in range(len(layout.block)))


def _as_scales(reduced: jax.Array, layout: Layout, axis: int) -> jax.Array:
    """A half reduction of :func:`_halved`'s view (the half axis after the paired axis's blocks)
    with the half axis last: the shape of :attr:`Nibbles.half_scales`."""
    return reduced if axis == -1 else jnp.moveaxis(reduced, axis % len(layout.block) + 1, -1)


def _from_scales(scales: jax.Array, layout: Layout, axis: int) -> jax.Array:
    """The inverse of :func:`_as_scales`, with the reduced axes put back (as 1s): broadcasts against
    :func:`_halved`'s view."""
    if axis != -1:
        scales = jnp.moveaxis(scales, -1, axis % len(layout.block) + 1)
    return jnp.expand_dims(scales, _half_axes(layout, axis))


def _unpacked(packed: jax.Array, layout: Layout, axis: int = -1) -> jax.Array:
    """The int32 codes, the array's shape, of nibbles packed along ``axis``: each chunk's low nibbles,
    then its high ones (one concatenation of bytes, cast to int32 after it: where the step's three
    readers make XLA:CPU write the codes out, it writes bytes; ``benchmarks/NOTES.md``, "4-bit: the
    step's passes")."""
    if axis != -1:
        return _unpacked_along(packed, axis)
    *lead, half_row = packed.shape
    w = chunk(2 * half_row)
    groups = _with_last(packed, (*lead, half_row * 2 // w, 1, w // 2), 3)
    spec = placement.explicit_spec(groups)
    pair = jnp.concatenate([groups & 0xF, groups >> 4], axis=-2)
    pair = placement.reshaped(pair, pair.shape, None if spec is None else (*spec[:-3], spec[-3], None, None))
    codes = placement.reshaped(pair, (*lead, half_row * 2), None if spec is None else (*spec[:-3], spec[-3]))
    return codes.astype(jnp.int32)


def _packed(codes: jax.Array, layout: Layout, axis: int = -1, seed: jax.Array | None = None) -> jax.Array:
    """Int codes (0 to 15) of the array's shape packed two per byte along ``axis`` (the module docstring).

    The codes are written out as bytes first (an optimization barrier), then packed four bytes at a
    time as uint32 words: a code under 16 shifted left by 4 stays inside its byte. XLA:CPU ran the
    same packing fused into the encode, or on bytes, 2-5x slower (``benchmarks/NOTES.md``, "4-bit:
    the step's passes")."""
    if axis != -1:
        return _written_out(codes, functools.partial(_packed_along, axis=axis), seed)
    *lead, row = codes.shape
    w = chunk(row)
    spec = placement.explicit_spec(codes)
    if w % 8:  # half chunks of whole words only; else byte by byte

        def by_bytes(codes: jax.Array) -> jax.Array:
            pair = _with_last(codes, (*lead, row // w, 2, w // 2), 3)
            joined = (pair[..., 0, :] | (pair[..., 1, :] << 4)).astype(jnp.uint8)
            return placement.reshaped(joined, (*lead, row // 2), None if spec is None else spec)

        return _written_out(codes, by_bytes, seed)
    as_bytes = jax.lax.optimization_barrier(codes.astype(jnp.uint8))
    words_spec = None if spec is None else (*spec[:-1], spec[-1], None, None, None)
    pair = placement.reshaped(as_bytes, (*lead, row // w, 2, w // 8, 4), words_spec)
    words = jax.lax.bitcast_convert_type(pair, jnp.uint32)
    joined = jax.lax.bitcast_convert_type(words[..., 0, :] | (words[..., 1, :] << 4), jnp.uint8)
    joined_spec = None if spec is None else (*spec[:-1], spec[-1], None, None)
    return placement.reshaped(joined, (*lead, row // 2), None if joined_spec is None else joined_spec[:-2])


def _written_out(codes: jax.Array, pack: Callable[[jax.Array], jax.Array], seed: jax.Array | None) -> jax.Array:
    """``pack(codes)``, the codes written out as bytes first where ``seed`` is given (an encode's): the
    packing in a conditional on the seed (always true; both branches pack), which XLA:CPU does not
    fuse into the encode. Fused, each byte's loop encodes its two entries and runs 2-3x slower
    (``benchmarks/NOTES.md``, "4-bit: the step's passes"); an optimization barrier does not keep
    them apart (XLA:CPU removes it before fusion)."""
    as_bytes = codes.astype(jnp.uint8)
    if seed is None:
        return pack(as_bytes)
    return jax.lax.cond(seed != jnp.uint32(0xFFFFFFFF), pack, pack, as_bytes)


def _packed_along(codes: jax.Array, axis: int) -> jax.Array:
    """:func:`_packed` along an axis before the last: that axis halved, then ``-1 - axis`` unit axes
    appended (which say, in the stored shape, which axis was paired)."""
    at, spec = axis % codes.ndim, placement.explicit_spec(codes)
    n, w = codes.shape[at], chunk(codes.shape[at])
    split = (*codes.shape[:at], n // w, 2, w // 2, *codes.shape[at + 1 :])
    pair = placement.reshaped(codes, split, None if spec is None else (*spec[: at + 1], None, None, *spec[at + 1 :]))
    low, high = (jax.lax.index_in_dim(pair, half, at + 1, keepdims=False) for half in (0, 1))
    joined = (low | (high << 4)).astype(jnp.uint8)
    shape = (*codes.shape[:at], n // 2, *codes.shape[at + 1 :], *(1,) * (-1 - axis))
    return placement.reshaped(joined, shape, None if spec is None else (*spec, *(None,) * (-1 - axis)))


def _unpacked_along(packed: jax.Array, axis: int) -> jax.Array:
    """The inverse of :func:`_packed_along` (int32 codes)."""
    ndim = packed.ndim + 1 + axis  # the array's, less the unit axes
    at, spec = axis % ndim, placement.explicit_spec(packed)
    shape = tuple(packed.shape[:ndim])
    w = chunk(2 * shape[at])
    grouped = (*shape[:at], 2 * shape[at] // w, 1, w // 2, *shape[at + 1 :])
    groups_spec = None if spec is None else (*spec[: at + 1], None, None, *spec[at + 1 : ndim])
    groups = placement.reshaped(packed, grouped, groups_spec)
    pair = jnp.concatenate([groups & 0xF, groups >> 4], axis=at + 1)
    whole = (*shape[:at], 2 * shape[at], *shape[at + 1 :])
    return placement.reshaped(pair, whole, None if spec is None else spec[:ndim]).astype(jnp.int32)


def _largest(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """The largest entry of non-negative ``x`` over ``axes`` (removed): from
    :data:`rmsprop_jax._codec_8bit.PARALLEL_MAXIMA` entries on as elementwise maxima of halves, which
    XLA:CPU runs on every core, below as reductions (the same maxima, bit for bit)."""
    largest = blocks.max_by_halving if x.size >= blocks.PARALLEL_MAXIMA else blocks.max_by_reduction
    for axis in sorted((axis % x.ndim for axis in axes), reverse=True):
        x = largest(x, axis)
    return x


def half_maxima(x: jax.Array, layout: Layout, parts: int = 2, axis: int = -1) -> jax.Array:
    """Each half block's largest magnitude (``parts=4``: each quarter's), halves along ``axis``: the
    8-bit layout's scales' shape plus a last axis of ``parts``. A NaN counts as 0 (it must not poison
    a scale)."""
    magnitude = jnp.abs(_halved(x, layout, parts, axis))
    # Non-negative floats order as their int32 bit patterns (the 8-bit codec's half_maxima).
    bits = jax.lax.bitcast_convert_type(jnp.where(jnp.isnan(magnitude), 0, magnitude), jnp.int32)
    largest = _as_scales(_largest(bits, _half_axes(layout, axis)), layout, axis)
    return jax.lax.bitcast_convert_type(largest, jnp.float32)


def stored_quarter_maxima(q: Nibbles, layout: Layout, axis: int = -1) -> jax.Array:
    """Each quarter block's largest magnitude as ``q`` holds it (shape: :attr:`Nibbles.half_scales`'s
    plus a last axis of 2, a half's two quarters), read from the codes (they order as their values)."""
    codes = _halved(_unpacked(q.nibbles, layout, axis), layout, 4, axis)
    largest = _as_scales(_largest(codes, _half_axes(layout, axis)), layout, axis)  # a quarter's axes: a half's
    largest = largest.reshape(*largest.shape[:-1], 2, 2)
    return blocks.magnitude(largest, FORMAT) * q.half_scales[..., None]


def scales_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    """The shape of :attr:`Nibbles.half_scales` for an array of ``shape`` (whichever axis is paired)."""
    return (*blocks.scales_shape(shape, layout), 2)


def packed_shape(shape: tuple[int, ...], axis: int = -1) -> tuple[int, ...]:
    """The shape of :attr:`Nibbles.nibbles` for an array of ``shape`` paired along ``axis``: ``axis``
    halved, then ``-1 - axis`` unit axes (none for the last axis)."""
    at = axis % len(shape)
    return (*shape[:at], shape[at] // 2, *shape[at + 1 :], *(1,) * (-1 - axis))


def unpacked_shape(nibbles_shape: tuple[int, ...], half_scales_shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """The array's shape and paired axis that :func:`packed_shape` gave these shapes (the half scales
    have one axis more than the array)."""
    nibbles_shape, ndim = tuple(nibbles_shape), len(half_scales_shape) - 1
    axis = ndim - len(nibbles_shape) - 1
    if not nibbles_shape or not -ndim <= axis < 0 or any(d != 1 for d in nibbles_shape[ndim:]):
        return (), -1
    at = axis % ndim
    return (*nibbles_shape[:at], 2 * nibbles_shape[at], *nibbles_shape[at + 1 : ndim]), axis


def layout_of(nibbles_shape: tuple[int, ...], half_scales_shape: tuple[int, ...]) -> tuple[Layout, int]:
    """The layout and paired axis of a :class:`Nibbles` array, read from its arrays' shapes
    (:func:`unpacked_shape`; the block scales are the half scales less their last axis).

    Raises:
      ValueError: the shapes fit no 4-bit layout.
    """
    shape, axis = unpacked_shape(nibbles_shape, half_scales_shape)
    layout = None
    if shape and tuple(half_scales_shape)[-1:] == (2,):
        try:
            layout = blocks.layout_of(shape, tuple(half_scales_shape)[:-1])
        except ValueError:
            layout = None
        if layout is not None and axis != -1:
            layout = as_box(layout, shape)
    if layout is None or not fits(layout, shape, axis=axis):
        raise ValueError(
            f"4-bit codes of shape {tuple(nibbles_shape)} with half scales of shape {tuple(half_scales_shape)} fit "
            "no block layout: this state's arrays were not written by rmsprop_jax for these params"
        )
    return layout, axis


def encode(
    x: jax.Array, layout: Layout, seed: jax.Array | None, scale: jax.Array | None = None, axis: int = -1
) -> Nibbles:
    """Quantizes a non-negative float32 array half block by half block (the module docstring).

    Args:
      x: float32, non-negative (magnitudes are taken; inf is clamped as in the 8-bit codec).
      layout: One that :func:`fits`.
      seed: uint32 scalar keying the rounding (each entry draws its bits from its global index);
        ``None`` rounds to the nearer code in value.
      scale: The half blocks' scales (:attr:`Nibbles.half_scales`' shape), each at least its half's
        largest entry (larger entries are clipped to it); default the halves' maxima.
      axis: The paired axis (counted from the end), along which blocks are halved and codes packed.

    Derivatives: the codes are integers; each half scale's tangent is the least-squares fit of
    ``x``'s tangent by a multiple of the half's values (as in the 8-bit codec).
    """
    if seed is None:
        return _encoded(x, layout, seed, scale, axis)
    return _encoded_straight_through(x, seed, scale, layout, axis)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _encoded_straight_through(
    x: jax.Array, seed: jax.Array, scale: jax.Array | None, layout: Layout, axis: int
) -> Nibbles:
    return _encoded(x, layout, seed, scale, axis)


@_encoded_straight_through.defjvp
def _encoded_straight_through_jvp(
    layout: Layout, axis: int, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[Nibbles, Nibbles]:
    quantized = _encoded(primals[0], layout, primals[1], primals[2], axis)
    value = decode(quantized, layout, axis)
    halved_value, axes = _halved(value, layout, 2, axis), _half_axes(layout, axis)
    fit = _as_scales(jnp.sum(halved_value * _halved(tangents[0], layout, 2, axis), axis=axes), layout, axis)
    norm = _as_scales(jnp.sum(jnp.square(halved_value), axis=axes), layout, axis)
    scale_tangent = quantized.half_scales * jnp.where(norm > 0, fit / jnp.where(norm > 0, norm, 1), 0)
    codes_tangent = np.zeros(quantized.nibbles.shape, jax.dtypes.float0)
    return quantized, Nibbles(codes_tangent, scale_tangent)  # pyright: ignore[reportArgumentType]


def _encoded(x: jax.Array, layout: Layout, seed: jax.Array | None, scale: jax.Array | None, axis: int) -> Nibbles:
    """:func:`encode`'s body."""
    halves = _halved(x, layout, 2, axis)
    magnitudes = jnp.minimum(jnp.abs(halves), LARGEST)
    scale = jnp.minimum(half_maxima(x, layout, 2, axis) if scale is None else scale, LARGEST)
    spread = _from_scales(scale, layout, axis)
    inverse = jnp.where(spread > 0, 1 / jnp.where(spread > 0, spread, 1), 0)
    y = jnp.clip(magnitudes * inverse, SMALLEST, 1)
    shift = 23 - FORMAT.mantissa_bits
    if seed is None:  # to nearest: half a code step in place of the random bits
        noise = jnp.uint32(1 << (shift - 1))
    else:
        noise = _halved(dtypes.rounding_bits(seed, x.shape, shift), layout, 2, axis)
    codes = blocks.magnitude_code(y, noise, FORMAT)
    whole = blocks.unblocked(_merged(codes, axis), layout, x.shape)
    return Nibbles(_packed(whole, layout, axis, seed), scale)


def _merged(halved: jax.Array, axis: int = -1) -> jax.Array:
    """The inverse of :func:`_halved`'s cut (back to :func:`rmsprop_jax._codec_8bit.blocked`'s view)."""
    spec = placement.explicit_spec(halved)
    if axis == -1:
        shape = (*halved.shape[:-2], math.prod(halved.shape[-2:]))
        return placement.reshaped(halved, shape, None if spec is None else (*spec[:-2], None))
    at = 2 * (axis % ((halved.ndim - 1) // 2)) + 1
    shape = (*halved.shape[:at], halved.shape[at] * halved.shape[at + 1], *halved.shape[at + 2 :])
    return placement.reshaped(halved, shape, None if spec is None else (*spec[:at], None, *spec[at + 2 :]))


def decode(q: Nibbles, layout: Layout, axis: int = -1) -> jax.Array:
    """The float32 array that ``q`` holds."""
    shape, _ = unpacked_shape(q.nibbles.shape, q.half_scales.shape)
    codes = _halved(_unpacked(q.nibbles, layout, axis), layout, 2, axis)
    value = blocks.magnitude(codes, FORMAT) * _from_scales(q.half_scales, layout, axis)
    return blocks.unblocked(_merged(value, axis), layout, shape)


def filled_code(fill: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """The byte (two equal codes) and half scale of every entry of an array holding ``fill``
    everywhere: the scale ``|fill|``, the top code (code 1, which decodes to 0, for a 0 fill)."""
    magnitude = jnp.minimum(jnp.abs(jnp.asarray(fill, jnp.float32)), LARGEST)
    code = jnp.where(magnitude > 0, jnp.int32(FORMAT.largest_code), jnp.int32(1))
    return (code | (code << 4)).astype(jnp.uint8), magnitude


def filled(zeros: jax.Array, fill: jax.Array | float, layout: Layout, axis: int = -1) -> Nibbles:
    """``zeros + fill`` as :func:`filled_code` says, placed as ``zeros`` is (the param's shape)."""
    byte, scale = filled_code(fill)
    packed = _packed(zeros.astype(jnp.int32), layout, axis).astype(jnp.uint8) + byte
    half_scales = half_maxima(zeros.astype(jnp.float32) + scale, layout, 2, axis)
    return Nibbles(packed, half_scales)
