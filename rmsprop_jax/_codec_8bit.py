"""8-bit block-wise storage of one state array: the codec (encode and decode only).

A quantized array is kept as ``uint8`` codes of the array's own shape (so the codes shard
as the parameter does) and one float32 scale per block, the block's largest magnitude.
Each entry is divided by its block's scale and stored as a small float built with integer
bit operations, stochastically rounded:

- non-negative arrays (the square average ``nu``): E5M3, 5 exponent and 3 mantissa bits
  with subnormals, from ``2**-33`` to 1 (10 decades) in steps of at most 1/8 of a binade;
- signed arrays (``mu``, the momentum buffer): a sign bit and E4M3, from ``2**-17`` to 1.

Why these maps: ``benchmarks/code_maps.py`` and ``benchmarks/NOTES.md``, "8-bit: which code map
for `nu`" (E5M3 keeps its
6.5% median noise for every gradient spread measured, where E4M4 runs out of range at 3
decades and a lookup map needs a table search that costs 150-190x the bit operations on
XLA:CPU). The block's largest entry is exact (it encodes to 1.0); rounding is unbiased
(random bits below the kept mantissa, then truncation); an all-zero block decodes to zeros.

Blocks (:func:`block_layout`), for every array of at least 4096 entries, chosen from its global
shape so that every even sharding of any axis 2, 4 or 8 ways cuts between blocks (a sharded step
then needs no collective and equals one device's, on any mesh, whether or not ``init`` sees the
sharding): the first of these that does so

- 16 x 16 tiles over the last two axes when both extents are multiples of 16;
- runs along a row: the last axis, or the fewest trailing axes that hold 256 entries read as
  one axis in memory order. A run is 256 entries when 256 divides the row; else the largest
  divisor of the row up to 256 when that is at least 192; else, with ``n = ceil(row / 256)``
  runs per row, runs of ``row / n`` where ``n`` divides the row (a row of 300: two runs of
  150), else 256 with each row's last run shorter (a row of 257: 256 and 1). That short run
  is padded with zeros to a full run inside the codec only: the stored codes keep the array's
  shape, a zero cannot raise a block's largest magnitude (padding never moves a scale), and
  the padding is sliced off before anything is returned;
- boxes (:func:`_box`): ``block[i]`` entries along each axis ``i``, each dividing the axis's
  narrowest even shard (the axis over 8, 4 or 2), the largest such block of at most 256
  entries (a 100 x 64 embedding: 25 x 8; a 1280 x 1000 classifier: 2 x 125), written as tiles
  or runs where it is one; none (float32) where it holds fewer than 16 entries.

A layout is a function of the codes' and the scales' shapes (:func:`layout_of`): runs of a
row divide it exactly unless they are runs of 256 with a padded last one, and the runs per row
tell which; a box's extents are the codes' over the scales'. So a state needs nothing but its
arrays to be read, under ``jax.jit`` too.

Arrays under 4096 entries are not quantized (their codes would save little). Only where the
array's sharding is visible (a concrete array, or a tracer on a mesh with Explicit axes) and
goes beyond the even shardings up to 8 ways, cutting the layout's blocks, is the rule applied
to each shard's extents instead: a row never spans a sharded axis, and along a sharded last
axis a run is the largest divisor of the shard's width up to 256 (at least 16, else the array
keeps float32). The layout of each stored array is decided once, by ``init``, and read back
from the arrays' shapes (:func:`layout_of`).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rmsprop_jax import _dtypes as dtypes
from rmsprop_jax import _placement as placement

MIN_SIZE = 4096  # smaller arrays keep a float32 state (their codes would save little)
TILE = 16
RUN = 256
MIN_RUN = 16  # a run cut shorter than this by a sharded axis would cost more in scales than it saves
FULL_RUN = 192  # a run this long that divides its row needs no padding, at most 4/3 of 256's scales
# Values and scales are clamped here (inf would poison a block), 2**126 rather than float32's largest
# (~2**128): XLA:CPU computes x / scale as x * (1 / scale) and flushes a subnormal reciprocal to zero.
LARGEST = 2.0**126
# From this many entries on, the block maxima are elementwise maxima of halves, which XLA:CPU runs on
# every core; a reduction runs on one, and starves beside the step's other fusions on a large array
# (8192 x 2048: 51 ms of a 61 ms step). Below it a reduction costs little, and compiles in about
# half the time (`benchmarks/NOTES.md`, "8-bit: the block maxima by size").
PARALLEL_MAXIMA = 1 << 18


class Layout(NamedTuple):
    """How an array is cut into blocks of one scale each (:func:`block_layout`).

    Attributes:
      kind: ``"tiles"``, 16 x 16 over the last two axes; ``"runs"`` along a row; or
        ``"boxes"``, a block of ``block[i]`` entries along each axis ``i``.
      run_axes: For runs: how many trailing axes make a row, read as one axis in memory
        order (1: the last axis).
      run_length: For runs: the entries of each run; a row's last run is padded where
        this does not divide the row.
      block: For boxes: the block's extent along each axis (each divides the axis).
    """

    kind: Literal["tiles", "runs", "boxes"]
    run_axes: int = 1
    run_length: int = 256
    block: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.kind == "tiles":
            return "tiles"
        if self.kind == "boxes":
            return "boxes of " + "x".join(map(str, self.block))
        over = "" if self.run_axes == 1 else f" over the last {self.run_axes} axes"
        return "runs" if (self.run_length, over) == (RUN, "") else f"runs of {self.run_length}{over}"


TILES = Layout("tiles")
RUNS = Layout("runs")  # of 256 along the last axis


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

    @property
    def headroom(self) -> float:
        """How far a block's scale may sit above its bulk (a lower bound of the smaller of its
        halves' largest entries) where one entry jumps: 2**20 of the unsigned codes' 2**33,
        2**8 of the signed codes' 2**17, so that the bulk keeps normal codes, 10 and 6 binades
        of them below it."""
        return 2.0**8 if self.signed else 2.0**20

    @property
    def growth(self) -> float:
        """How much a block's scale may grow per step beyond :attr:`headroom` times its bulk: 2,
        so that one entry that stays huge reaches its value in a step per binade (a genuinely
        large entry: 13 steps at most for the unsigned codes), while a burst of up to about 10
        steps leaves the bulk its normal codes."""
        return 2.0


UNSIGNED = Format(5, 3, signed=False)  # nu
SIGNED = Format(4, 3, signed=True)  # mu, momentum


class Quantized(NamedTuple):
    """One state array in 8 bits: what ``state.nu[...]`` holds for a leaf that ``state_dtype="8bit"`` reaches.

    Read its values with :func:`rmsprop_jax.state_as_float32` (which knows each leaf's block
    layout and code format); :func:`rmsprop_jax.state_report` says which leaves are 8-bit.

    Attributes:
      codes: ``uint8``, the array's shape: the sign bit (signed formats) and the magnitude code.
      scales: float32, one per block: at least the block's largest magnitude (the codes are
        fractions of it). Named so as not to collide with optax's own state fields (``scale``
        of ``reduce_on_plateau``) under ``optax.tree.get``.

    Example:
      >>> import jax.numpy as jnp
      >>> import rmsprop_jax
      >>> state = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit").init({"w": jnp.ones((64, 64))})
      >>> q = state.nu["w"]
      >>> type(q).__name__, q.codes.dtype, q.codes.shape, q.scales.shape
      ('Quantized', dtype('uint8'), (64, 64), (8, 8))
    """

    codes: jax.Array
    scales: jax.Array


def block_layout(
    shape: tuple[int, ...], local_shape: tuple[int, ...] | None = None, min_size: int = MIN_SIZE
) -> Layout | None:
    """How an array of ``shape`` is blocked (:data:`TILES`, a runs :class:`Layout`), or ``None`` (not quantized).

    Args:
      shape: The array's (global) shape.
      local_shape: One shard's shape, where the sharding is known; the blocks must fit it.
      min_size: The fewest entries an array quantized has (a narrower kind's may be fewer).
    """
    return layout_decision(shape, local_shape, min_size)[0]


def layout_decision(
    shape: tuple[int, ...], local_shape: tuple[int, ...] | None = None, min_size: int = MIN_SIZE
) -> tuple[Layout | None, str]:
    """:func:`block_layout`'s answer and, where it is ``None``, why (for the state report).

    The layout is a function of the global shape, chosen so that no block crosses a shard boundary
    of any even sharding of any axis 2, 4 or 8 ways (:func:`_even_shardings_keep_blocks_whole`):
    the module docstring's tiles or runs where they satisfy that, else the largest box of at most
    256 entries that does (:func:`_box`), else no layout. Only where ``local_shape`` shows a
    sharding beyond that (more than 8 ways, or uneven) that the layout's blocks cross is the rule
    applied to one shard's extents instead.
    """
    entries = math.prod(shape)
    if entries < min_size:
        return None, f"{entries} entries < {min_size}"
    layout = _fitting(shape, (False,) * len(shape))
    if layout is None or not _even_shardings_keep_blocks_whole(layout, shape):
        layout = _box(shape)
    if layout is None:
        return None, f"no block of {MIN_RUN} or more entries fits every even sharding ({_dims(shape)})"
    if (
        local_shape is None
        or tuple(local_shape) == tuple(shape)
        or shards_keep_blocks_whole(layout, shape, local_shape)
    ):
        return layout, ""
    layout = _fitting(local_shape, tuple(local < whole for local, whole in zip(local_shape, shape, strict=True)))
    if layout is None:
        return None, f"no block fits its shards ({_dims(local_shape)})"
    return layout, ""


SHARD_WAYS = (2, 4, 8)  # the even shardings every layout keeps whole blocks under


def _boundaries_between_blocks(layout: Layout, shape: tuple[int, ...], axis: int, stride: int) -> bool:
    """Whether shard boundaries every ``stride`` entries along ``axis`` fall between ``layout``'s blocks."""
    if layout.kind == "tiles":
        return axis < len(shape) - 2 or stride % TILE == 0
    if layout.kind == "boxes":
        return stride % layout.block[axis] == 0
    return axis < len(shape) - layout.run_axes or (stride * math.prod(shape[axis + 1 :])) % layout.run_length == 0


def _even_shardings_keep_blocks_whole(layout: Layout, shape: tuple[int, ...]) -> bool:
    """Whether every sharding of one axis 2, 4 or 8 ways into equal shards cuts between blocks."""
    return all(
        _boundaries_between_blocks(layout, shape, axis, extent // ways)
        for axis, extent in enumerate(shape)
        for ways in SHARD_WAYS
        if extent % ways == 0
    )


def shards_keep_blocks_whole(layout: Layout, shape: tuple[int, ...], local_shape: tuple[int, ...]) -> bool:
    """Whether the shards of ``local_shape`` (one shard's extents) hold whole blocks of ``layout``."""
    return all(
        local == whole or (whole % local == 0 and _boundaries_between_blocks(layout, shape, axis, local))
        for axis, (local, whole) in enumerate(zip(local_shape, shape, strict=True))
    )


@functools.cache
def _box(shape: tuple[int, ...]) -> Layout | None:
    """The largest block of at most 256 entries whose extent along each axis divides that axis's
    narrowest even shard (the axis over 8, 4 or 2, the largest of these that divides it; the whole
    axis where none does), preferring longer extents along the trailing axes (memory order); as
    :data:`TILES` or a runs layout where it is one, ``None`` where it is under 16 entries."""
    narrowest = [next((extent // ways for ways in (8, 4, 2) if extent % ways == 0), extent) for extent in shape]
    choices = [[d for d in range(1, min(n, RUN) + 1) if n % d == 0] for n in narrowest]
    best: tuple[int, tuple[int, ...]] = (0, ())
    # Over the last two axes first: a block that spans more axes costs more per entry to reduce and to
    # index (measured: a 3 x 3 x 192 x 192 kernel's step 5.0x optax's in 1 x 3 x 3 x 24 boxes, 3.2x in
    # 1 x 1 x 8 x 24), so more axes only where the last two give fewer than 128 entries.
    for spanned in sorted({min(2, len(shape)), len(shape)}):
        for block in itertools.product(*([1] for _ in shape[:-spanned]), *choices[-spanned:]):
            size = math.prod(block)
            if size <= RUN and (size, block[::-1]) > (best[0], best[1][::-1]):
                best = (size, block)
        if best[0] >= RUN // 2:
            break
    size = best[0]
    block = tuple(int(extent) for extent in best[1])
    if size < MIN_RUN:
        return None
    if len(shape) >= 2 and block[-2:] == (TILE, TILE) and math.prod(block[:-2]) == 1:
        return TILES
    if math.prod(block[:-1]) == 1:
        return Layout("runs", 1, block[-1])
    return Layout("boxes", block=block)


def _fitting(fit: tuple[int, ...], sharded: tuple[bool, ...]) -> Layout | None:
    """The module docstring's rule over one shard's extents (``sharded``: which axes are split)."""
    if len(fit) == 0:  # a scalar: fewer than 4096 entries, never asked
        return None
    if len(fit) >= 2 and fit[-2] % TILE == 0 and fit[-1] % TILE == 0:
        return TILES
    run_axes, row = 1, fit[-1]
    while row < RUN and run_axes < len(fit) and not sharded[-run_axes] and not sharded[-1 - run_axes]:
        row *= fit[-1 - run_axes]
        run_axes += 1
    divisor = max(d for d in range(1, min(row, RUN) + 1) if row % d == 0)
    if sharded[-1]:  # runs must tile each shard's rows exactly
        return Layout("runs", 1, divisor) if divisor >= MIN_RUN else None
    if row < MIN_RUN:
        return None
    if divisor >= FULL_RUN or divisor == row:
        return Layout("runs", run_axes, divisor)
    runs = -(-row // RUN)
    if row % runs == 0:  # as many runs as 256 would give, all full: nothing to pad
        return Layout("runs", run_axes, row // runs)
    return Layout("runs", run_axes, RUN)  # the row's last run is padded


def layout_of(codes_shape: tuple[int, ...], scales_shape: tuple[int, ...]) -> Layout:
    """The layout of a :class:`Quantized` array, read from its codes' and scales' shapes.

    Tiles have one scale per 16 x 16 over the last two axes; runs keep the leading axes and
    have ``runs`` scales per row, whose length is ``row / runs`` where that divides the row,
    else 256 (the rule never pads a row that its run count divides); boxes have one scale per
    block along every axis, each axis's extent over its scales' being the block's.

    Raises:
      ValueError: the shapes fit no layout (a state whose arrays were mixed up or corrupted).
    """
    codes_shape, scales_shape = tuple(codes_shape), tuple(scales_shape)
    ndim = len(codes_shape)
    if (
        ndim >= 2
        and len(scales_shape) == ndim
        and scales_shape[:-2] == codes_shape[:-2]
        and codes_shape[-2] % TILE == 0
        and codes_shape[-1] % TILE == 0
        and scales_shape[-2:] == (codes_shape[-2] // TILE, codes_shape[-1] // TILE)
    ):
        return TILES
    run_axes = ndim - len(scales_shape) + 1
    if 1 <= run_axes <= ndim and scales_shape[:-1] == codes_shape[: ndim - run_axes] and scales_shape[-1] > 0:
        row, runs = math.prod(codes_shape[ndim - run_axes :]), scales_shape[-1]
        length = row // runs if row % runs == 0 else RUN
        if -(-row // length) == runs:
            return Layout("runs", run_axes, length)
    if len(scales_shape) == ndim and all(s > 0 and c % s == 0 for c, s in zip(codes_shape, scales_shape, strict=True)):
        return Layout("boxes", block=tuple(c // s for c, s in zip(codes_shape, scales_shape, strict=True)))
    raise ValueError(
        f"8-bit codes of shape {codes_shape} with scales of shape {scales_shape} fit no block layout: "
        "this state's arrays were not written by rmsprop_jax for these params"
    )


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "()"


def _runs(shape: tuple[int, ...], layout: Layout) -> tuple[tuple[int, ...], int, int, int]:
    """A runs layout's geometry: the leading axes, the entries of one row (the trailing
    ``run_axes`` read as one), the run length and the runs per row (the last may be padded)."""
    lead, row = shape[: len(shape) - layout.run_axes], math.prod(shape[len(shape) - layout.run_axes :])
    return lead, row, layout.run_length, -(-row // layout.run_length)


def blocked(x: jax.Array, layout: Layout) -> jax.Array:
    """``x`` with each block on its own axes: tiles ``(..., H/16, 16, W/16, 16)``, runs
    ``(..., runs per row, run_length)``, a row's last run padded with zeros where the run
    length does not divide the row."""
    spec = placement.explicit_spec(x)
    if layout.kind == "tiles":
        *lead, height, width = x.shape
        blocked_spec = None if spec is None else (*spec[:-2], spec[-2], None, spec[-1], None)
        return placement.reshaped(x, (*lead, height // TILE, TILE, width // TILE, TILE), blocked_spec)
    if layout.kind == "boxes":
        blocked_shape = tuple(d for n, b in zip(x.shape, layout.block, strict=True) for d in (n // b, b))
        boxed_spec = None if spec is None else tuple(d for axis in spec for d in (axis, None))
        return placement.reshaped(x, blocked_shape, boxed_spec)
    lead, row, length, runs = _runs(x.shape, layout)
    row_spec = None if spec is None else (*spec[: len(lead)], spec[-1] if layout.run_axes == 1 else None)
    if layout.run_axes > 1:
        x = placement.reshaped(x, (*lead, row), row_spec)
    if runs * length > row:  # the rule puts no sharded axis in a padded row
        x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, runs * length - row)])
    return placement.reshaped(x, (*lead, runs, length), None if row_spec is None else (*row_spec, None))


def unblocked(x: jax.Array, layout: Layout, shape: tuple[int, ...]) -> jax.Array:
    """The inverse of :func:`blocked` (the padding sliced off)."""
    spec = placement.explicit_spec(x)
    if layout.kind == "tiles":
        return placement.reshaped(x, shape, None if spec is None else (*spec[:-4], spec[-4], spec[-2]))
    if layout.kind == "boxes":
        return placement.reshaped(x, shape, None if spec is None else spec[::2])
    lead, row, length, runs = _runs(shape, layout)
    row_spec = None if spec is None else (*spec[:-2], spec[-2])
    x = placement.reshaped(x, (*lead, runs * length), row_spec)
    if runs * length > row:
        x = x[..., :row]
    if layout.run_axes == 1:
        return x
    return placement.reshaped(x, shape, None if spec is None else (*spec[:-2], *(None,) * layout.run_axes))


def block_axes(layout: Layout) -> tuple[int, ...]:
    if layout.kind == "boxes":
        return tuple(range(-2 * len(layout.block) + 1, 0, 2))
    return (-3, -1) if layout.kind == "tiles" else (-1,)


def magnitude_code(y: jax.Array, noise: jax.Array, fmt: Format) -> jax.Array:
    """``y`` in ``[0, 1]`` to its unbiased, stochastically rounded magnitude code (int32).

    One integer path for every code: ``noise`` (uniform in ``[0, 2**(23 - mantissa_bits))``) is
    added below the kept mantissa bits of ``y``'s float32 bit pattern, and the sum truncated
    (probabilities exact to float32's precision). A value under the smallest normal first has the
    smallest normal added (exactly, in float32, but for bits 20 below the code step), which puts
    its subnormal code in the mantissa of the binade above (its spacing is the subnormal step), so
    that subnormal and normal codes round the same way. Which path a value takes is decided by the
    value itself, not by its rounded code: a value just under the smallest normal that rounds up
    lands on the smallest normal code either way.
    """
    shift = 23 - fmt.mantissa_bits
    smallest_normal = fmt.subnormal_step * (1 << fmt.mantissa_bits)
    subnormal = y < jnp.float32(smallest_normal)
    lifted = y + jnp.where(subnormal, jnp.float32(smallest_normal), jnp.float32(0))
    rounded = (jax.lax.bitcast_convert_type(lifted, jnp.uint32) + noise) >> shift
    offset = jnp.where(
        subnormal, jnp.int32((fmt.bias + 1) << fmt.mantissa_bits), jnp.int32(fmt.bias << fmt.mantissa_bits)
    )
    return jnp.minimum(rounded.astype(jnp.int32) - offset, fmt.largest_code)  # a NaN (its bits) clamps to the top


def magnitude(code: jax.Array, fmt: Format) -> jax.Array:
    """The value in ``[0, 1]`` of a magnitude code (int32)."""
    shift = 23 - fmt.mantissa_bits
    normal = jax.lax.bitcast_convert_type(
        ((code + (fmt.bias << fmt.mantissa_bits)) << shift).astype(jnp.uint32), jnp.float32
    )
    return jnp.where(code >= (1 << fmt.mantissa_bits), normal, code.astype(jnp.float32) * fmt.subnormal_step)


def half_maxima(x: jax.Array, layout: Layout) -> jax.Array:
    """Each block's two halves' largest magnitudes: the scales' shape plus a last axis of 2.

    The halves are a tile's rows 0-7 and 8-15, a run's first and second half (an odd run
    padded with a zero, which moves no maximum). Their larger is the block's maximum (bit for
    bit: a maximum rounds nothing); their smaller is at most the block's second-largest
    magnitude (the largest lies in one half, the other half's largest is another entry): a
    lower bound of the block's bulk that one huge entry cannot raise. One reduction over ``x``,
    as the block maxima alone would be.
    """
    magnitude = jnp.abs(blocked(x, layout))
    # Non-negative floats order as their int32 bit patterns: an integer maximum is one instruction
    # where a float maximum also propagates NaN. A NaN entry counts as 0 (it is stored as a finite
    # code and must not poison its block's scale).
    bits = jax.lax.bitcast_convert_type(jnp.where(jnp.isnan(magnitude), 0, magnitude), jnp.int32)
    return jax.lax.bitcast_convert_type(_halves(bits, layout), jnp.float32)


def stored_half_maxima(q: Quantized, layout: Layout, fmt: Format) -> jax.Array:
    """:func:`half_maxima` of the array ``q`` holds, read from its codes (a reduction over the
    uint8 codes: the magnitude codes order as their values do) and its scales."""
    codes = blocked(q.codes, layout)
    largest = _halves(codes & jnp.uint8(0x7F) if fmt.signed else codes, layout)
    return magnitude(largest.astype(jnp.int32), fmt) * q.scales[..., None]


def _halves(blocked: jax.Array, layout: Layout) -> jax.Array:
    """The largest entry of each half of each block of ``blocked`` (non-negative, :func:`blocked`'s shape).

    From :data:`PARALLEL_MAXIMA` entries on as elementwise maxima of halves (:func:`max_by_halving`),
    below as reductions (the same maxima, bit for bit: a maximum rounds nothing)."""
    spec = placement.explicit_spec(blocked)
    largest = max_by_halving if blocked.size >= PARALLEL_MAXIMA else max_by_reduction
    if layout.kind == "tiles":
        *lead, rows, height, columns, width = blocked.shape
        halved_spec = None if spec is None else (*spec[:-3], None, None, spec[-2], None)
        halved = placement.reshaped(blocked, (*lead, rows, 2, height // 2, columns, width), halved_spec)
        return jnp.moveaxis(largest(largest(halved, -1), -2), -2, -1)
    if layout.kind == "boxes":  # halves along the first axis the block spans; the rest of the block reduced
        first = next(i for i, extent in enumerate(layout.block) if extent > 1)
        at = 2 * first + 1  # that block axis in the blocked array
        if blocked.shape[at] % 2:
            blocked = jnp.pad(blocked, [(0, 1) if axis == at else (0, 0) for axis in range(blocked.ndim)])
        halved_shape = (*blocked.shape[:at], 2, blocked.shape[at] // 2, *blocked.shape[at + 1 :])
        halved_spec = None if spec is None else (*spec[:at], None, None, *spec[at + 1 :])
        halved = placement.reshaped(blocked, halved_shape, halved_spec)
        block_axes = (
            [2 * i + 1 for i in range(first)] + [at + 1] + [2 * i + 2 for i in range(first + 1, len(layout.block))]
        )
        for axis in sorted(block_axes, reverse=True):  # the last first: the earlier positions hold
            halved = largest(halved, axis)
        return jnp.moveaxis(halved, first + 1, -1)
    *lead, runs, length = blocked.shape
    if length % 2:
        blocked = jnp.pad(blocked, [(0, 0)] * (blocked.ndim - 1) + [(0, 1)])
        length += 1
    halved_spec = None if spec is None else (*spec[:-1], None, None)
    return largest(placement.reshaped(blocked, (*lead, runs, 2, length // 2), halved_spec), -1)


def max_by_reduction(x: jax.Array, axis: int) -> jax.Array:
    """The largest entry of ``x`` along ``axis`` (removed), as one reduction."""
    return jnp.max(x, axis=axis)


def max_by_halving(x: jax.Array, axis: int) -> jax.Array:
    """The largest entry of non-negative ``x`` along ``axis`` (removed), as elementwise maxima of its
    halves, then of theirs: an elementwise loop that XLA:CPU runs on every core, where a reduction
    runs on one (``benchmarks/NOTES.md``). An axis of ``n`` entries, not a power of two, first takes
    the maximum of its first and last ``2^k < n`` entries: they overlap, which a maximum does not
    mind, and no padded copy is written (a pad to ``2^(k+1)`` was a pass of its own)."""
    axis %= x.ndim
    length = x.shape[axis]
    if length & (length - 1):
        width = 1 << (length.bit_length() - 1)
        first = jax.lax.slice_in_dim(x, 0, width, axis=axis)
        x = jnp.maximum(first, jax.lax.slice_in_dim(x, length - width, length, axis=axis))
    while x.shape[axis] > 1:
        half = x.shape[axis] // 2
        x = jnp.maximum(jax.lax.slice_in_dim(x, 0, half, axis=axis), jax.lax.slice_in_dim(x, half, 2 * half, axis=axis))
    return jnp.squeeze(x, axis)


def encode(
    x: jax.Array, layout: Layout, fmt: Format, seed: jax.Array | None, scale: jax.Array | None = None
) -> Quantized:
    """Quantizes a float32 array block by block (see the module docstring)."""
    return encode_with_value(x, layout, fmt, seed, scale)[0]


def encode_with_value(
    x: jax.Array, layout: Layout, fmt: Format, seed: jax.Array | None, scale: jax.Array | None = None
) -> tuple[Quantized, jax.Array]:
    """Quantizes a float32 array block by block, and returns what the codes decode to.

    The value is the codes' decoded value (equal to :func:`decode` of the result bit for bit,
    ``tests/test_codec_8bit.py``), for callers that want it without a second pass over the
    codes; XLA drops it where nothing reads it (the RMSProp step uses each average before
    rounding, so that the rounding is computed once).

    Args:
      x: float32 values; non-negative for an unsigned ``fmt``. Magnitudes beyond the
        largest float32 (inf) are clamped to it first, so that the block's other entries
        keep finite values.
      layout: From :func:`block_layout`.
      fmt: :data:`UNSIGNED` or :data:`SIGNED`.
      seed: uint32 scalar keying the rounding (:func:`rmsprop_jax._dtypes.rounding_seed`);
        each element draws its bits from its index, as the 16-bit state does. ``None``
        rounds to nearest (for comparisons: it stalls slowly moving averages).
      scale: The blocks' scales (the shape of :attr:`Quantized.scales`), each at least its
        block's largest magnitude (larger magnitudes are clipped to it); default the
        blocks' maxima, which are then stored exactly. An upper bound known without a
        pass over ``x`` spares XLA:CPU a reduction that costs more than the whole step
        (``benchmarks/NOTES.md``, "8-bit: block scales without a reduction").

    Returns:
      The codes and the per-block scales, and the float32 array they decode to.

    Derivatives (``jax.grad`` through updates, as in meta-learning): the returned value's
    is ``x``'s (straight-through, as for the 16-bit rounding: it is unbiased). The codes
    are integers, so the next step sees the derivative through each block's scale: the
    least-squares fit of ``x``'s derivative by a multiple of the block's values, exact
    where the derivative scales the block (as a learning rate scales a momentum buffer).
    """
    if seed is None:
        return _encoded(x, layout, fmt, seed, scale)
    return _encoded_straight_through(x, seed, scale, layout, fmt)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _encoded_straight_through(
    x: jax.Array, seed: jax.Array, scale: jax.Array | None, layout: Layout, fmt: Format
) -> tuple[Quantized, jax.Array]:
    return _encoded(x, layout, fmt, seed, scale)


@_encoded_straight_through.defjvp
def _encoded_straight_through_jvp(
    layout: Layout, fmt: Format, primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[tuple[Quantized, jax.Array], tuple[Quantized, jax.Array]]:
    quantized, value = _encoded(primals[0], layout, fmt, primals[1], primals[2])
    tangent = tangents[0]
    blocked_value, axes = blocked(value, layout), block_axes(layout)
    fit = jnp.sum(blocked_value * blocked(tangent, layout), axis=axes)
    norm = jnp.sum(jnp.square(blocked_value), axis=axes)
    scale_tangent = quantized.scales * jnp.where(norm > 0, fit / jnp.where(norm > 0, norm, 1), 0)
    # Integer codes have no tangent: JAX's convention is a NumPy float0 array of their shape.
    codes_tangent = np.zeros(quantized.codes.shape, jax.dtypes.float0)
    no_codes_tangent = Quantized(codes_tangent, scale_tangent)  # pyright: ignore[reportArgumentType]
    return (quantized, value), (no_codes_tangent, tangent)


def _encoded(
    x: jax.Array, layout: Layout, fmt: Format, seed: jax.Array | None, scale: jax.Array | None
) -> tuple[Quantized, jax.Array]:
    """:func:`encode_with_value`'s body."""
    blocks = blocked(x, layout)
    magnitudes = jnp.minimum(jnp.abs(blocks), LARGEST)
    if scale is None:
        scale = jnp.max(magnitudes, axis=block_axes(layout), keepdims=True)
    else:
        scale = jnp.expand_dims(jnp.minimum(scale, LARGEST), block_axes(layout))
    # One reciprocal per block (what XLA:CPU makes of a division anyway), 0 for an empty block, so
    # that the loop over the entries is a multiply and a minimum.
    inverse = jnp.where(scale > 0, 1 / jnp.where(scale > 0, scale, 1), 0)
    y = jnp.minimum(magnitudes * inverse, 1)
    shift = 23 - fmt.mantissa_bits
    if seed is None:  # round to nearest: half a code step in place of the random bits
        noise = jnp.uint32(1 << (shift - 1))
    else:
        noise = blocked(dtypes.rounding_bits(seed, x.shape, shift), layout)
    kept = magnitude_code(y, noise, fmt)
    value = magnitude(kept, fmt) * scale  # computed only where a caller uses it
    code = kept
    if fmt.signed:
        code = code | jnp.where(blocks < 0, jnp.int32(0x80), jnp.int32(0))  # int32: under x64 a bare 0x80 is int64
        value = jnp.where(blocks < 0, -value, value)
    quantized = Quantized(unblocked(code.astype(jnp.uint8), layout, x.shape), jnp.squeeze(scale, block_axes(layout)))
    return quantized, unblocked(value, layout, x.shape)


def filled_code(fill: jax.Array | float, fmt: Format) -> tuple[jax.Array, jax.Array]:
    """The code (uint8) and block scale (float32) of every entry of an array that holds ``fill``
    everywhere: the scale ``|fill|`` (each block's maximum), the code ``fill``'s code rounded to
    nearest, the top code (0 for a 0 fill), so that the codes decode to ``fill`` exactly.

    The stochastic encode of such an array gives the same codes wherever ``fill * (1 / fill)`` is 1
    in float32; a constant needs no random bits (it has nothing to be unbiased about).
    """
    value = jnp.asarray(fill, jnp.float32)
    magnitude = jnp.minimum(jnp.abs(value), LARGEST)
    inverse = jnp.where(magnitude > 0, 1 / jnp.where(magnitude > 0, magnitude, 1), 0)
    half_step = jnp.uint32(1 << (22 - fmt.mantissa_bits))
    code = magnitude_code(jnp.minimum(magnitude * inverse, 1), half_step, fmt)
    if fmt.signed:
        code = code | jnp.where(value < 0, jnp.int32(0x80), jnp.int32(0))
    return code.astype(jnp.uint8), magnitude


def scales_shape(shape: tuple[int, ...], layout: Layout) -> tuple[int, ...]:
    """The shape of :attr:`Quantized.scales` for an array of ``shape``: one entry per block."""
    if layout.kind == "tiles":
        return (*shape[:-2], shape[-2] // TILE, shape[-1] // TILE)
    if layout.kind == "boxes":
        return tuple(n // b for n, b in zip(shape, layout.block, strict=True))
    lead, _, _, runs = _runs(shape, layout)
    return (*lead, runs)


def filled(zeros: jax.Array, fill: jax.Array | float, layout: Layout, fmt: Format) -> Quantized:
    """``zeros + fill`` quantized as :func:`filled_code` says, without an encode per entry; the codes
    and scales are placed as ``zeros`` is (a param's, :func:`rmsprop_jax._storage.zeros_sharded_like`)."""
    code, scale = filled_code(fill, fmt)
    scales = jnp.max(blocked(zeros.astype(jnp.float32) + scale, layout), axis=block_axes(layout))
    return Quantized(zeros.astype(jnp.uint8) + code, scales)


def decode(q: Quantized, layout: Layout, fmt: Format) -> jax.Array:
    """The float32 array that ``q`` holds."""
    code = blocked(q.codes, layout).astype(jnp.int32)
    value = magnitude(code & 0x7F if fmt.signed else code, fmt)
    if fmt.signed:
        value = jnp.where(code & 0x80, -value, value)
    scale = jnp.expand_dims(q.scales, block_axes(layout))
    return unblocked(value * scale, layout, q.codes.shape)
