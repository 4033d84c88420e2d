"""The 4-bit codec: layouts read back from shapes, exact powers of two, unbiased rounding, no zero, packing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmsprop_jax import _codec_4bit as codec
from rmsprop_jax import _codec_8bit as blocks

SHAPES = {
    "boxes": (16, 256),
    "runs": (8, 512),
    "tiles": (128, 128),
    "kernel boxes": (3, 3, 32, 64),
    "chunks of 12, packed byte by byte": (128, 96),
    "paired along the first axis, blocks of its own": (64, 1000),
    "paired along the input axis, the 8-bit boxes": (1, 1, 96, 48),
}
PAIRED = {name: SHAPES[name] for name in SHAPES if name.startswith("paired")}


def _layout(shape: tuple[int, ...]) -> tuple[blocks.Layout, int]:
    planned = codec.plan(blocks.block_layout(shape), shape)
    assert planned is not None
    return planned


def _half_scale_of_each_entry(x: np.ndarray, layout: blocks.Layout, axis: int = -1) -> np.ndarray:
    """Each entry's half block's largest magnitude, the array's shape (by encoding the maxima themselves)."""
    quantized = codec.encode(jnp.asarray(x), layout, None, axis=axis)
    top = codec.Nibbles(jnp.full_like(quantized.nibbles, 0xFF), quantized.half_scales)  # every code 15: the scale
    return np.asarray(codec.decode(top, layout, axis))


def _numpy_half_maxima(x: np.ndarray, block: tuple[int, ...], axis: int) -> np.ndarray:
    """Each entry's half block's largest entry (halves along ``axis``), by slicing each half out."""
    half = list(block)
    half[axis] //= 2
    out = np.empty_like(x)
    for index in np.ndindex(*(n // b for n, b in zip(x.shape, half, strict=True))):
        cut = tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, half, strict=True))
        out[cut] = x[cut].max()
    return out


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_shapes_and_the_layout_read_back(shape):
    layout, axis = _layout(shape)
    q = codec.encode(jnp.ones(shape), layout, None, axis=axis)
    paired = axis % len(shape)
    halved = (*shape[:paired], shape[paired] // 2, *shape[paired + 1 :])
    assert q.nibbles.dtype == jnp.uint8 and q.nibbles.shape == codec.packed_shape(shape, axis) == (
        *halved,
        *(1,) * (-1 - axis),  # a unit axis per axis after the paired one: the stored shape says which
    )
    assert q.half_scales.shape == codec.scales_shape(shape, layout) == (*blocks.scales_shape(shape, layout), 2)
    assert codec.layout_of(q.nibbles.shape, q.half_scales.shape) == (layout, axis)
    assert codec.unpacked_shape(q.nibbles.shape, q.half_scales.shape) == (shape, axis)
    entries_per_scale = np.prod(shape) / q.half_scales.size
    assert entries_per_scale <= 128


@pytest.mark.parametrize("shape", PAIRED.values(), ids=PAIRED)
def test_halves_along_the_paired_axis_are_the_blocks_cut_there(shape):
    layout, axis = _layout(shape)
    assert axis == -2 and layout.kind == "boxes" and layout.block[axis] % 4 == 0
    x = np.random.default_rng(9).random(shape).astype(np.float32)
    np.testing.assert_array_equal(_half_scale_of_each_entry(x, layout, axis), _numpy_half_maxima(x, layout.block, axis))


def test_which_axis_pairs_and_foreign_shapes_are_refused():
    head = (1280, 1000)  # 8-bit boxes of 2 x 125: neither 2 nor 125 a multiple of 4, 1000's shards odd (125)
    assert not codec.fits(blocks.block_layout(head), head)
    assert codec.plan(blocks.block_layout(head), head) == (blocks.Layout("boxes", block=(8, 25)), -2)
    kernel = (1, 1, 1152, 48)  # 8-bit boxes of 36 x 6: paired along the 1152 inputs in those boxes
    assert codec.plan(blocks.block_layout(kernel), kernel) == (blocks.block_layout(kernel), -2)
    assert codec.plan(blocks.block_layout((3, 3, 17, 31)), (3, 3, 17, 31)) is None  # every extent odd
    boxes = blocks.Layout("boxes", block=(16, 12))  # 96 columns: chunks of 12, which 6-column shards cut
    assert codec.fits(boxes, (64, 96), (64, 12)) and not codec.fits(boxes, (64, 96), (64, 6))
    assert codec.plan(boxes, (64, 96), (64, 6)) == (boxes, -2)
    assert codec.plan(None, (10,)) is None and not codec.fits(None, (10,))
    assert codec.box((16, 1000), -2) is None  # 2 rows a shard: no block there is a multiple of 4
    with pytest.raises(ValueError, match="fit no block layout"):
        codec.layout_of((16, 128), (3, 3, 2))
    with pytest.raises(ValueError, match="fit no block layout"):
        codec.layout_of((640, 1000, 1), (640, 8, 2))  # the scales of 2 x 125 boxes: no multiple of 4 on axis 0


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_powers_of_two_within_14_binades_of_their_half_round_trip_exactly(shape):
    layout, axis = _layout(shape)
    rng = np.random.default_rng(0)
    x = (2.0 ** rng.integers(-14, 1, shape)).astype(np.float32)
    x[..., ::2] = 1.0  # every half holds a 1 (its scale)
    for seed in (None, jnp.uint32(7)):
        decoded = codec.decode(codec.encode(jnp.asarray(x), layout, seed, axis=axis), layout, axis)
        np.testing.assert_array_equal(np.asarray(decoded), x)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_every_value_is_a_power_of_two_of_its_half_scale_never_zero_and_nearest_rounds_to_the_nearer(shape):
    layout, axis = _layout(shape)
    x = np.exp(np.random.default_rng(1).standard_normal(shape) * 3).astype(np.float32)
    scale = _half_scale_of_each_entry(x, layout, axis)
    decoded = np.asarray(codec.decode(codec.encode(jnp.asarray(x), layout, None, axis=axis), layout, axis))
    fraction = decoded / scale
    exponents = np.log2(fraction)
    np.testing.assert_array_equal(exponents, np.round(exponents))
    assert fraction.min() >= codec.SMALLEST and fraction.max() <= 1
    small = x < codec.SMALLEST * scale  # stored as the smallest code: rounded up, never to 0
    np.testing.assert_array_equal(fraction[small], codec.SMALLEST)
    below = 2.0 ** np.floor(np.log2(x[~small] / scale[~small])) * scale[~small]
    nearer = np.where(x[~small] - below < 2 * below - x[~small], below, 2 * below)
    np.testing.assert_allclose(decoded[~small], nearer, rtol=1e-6)


@pytest.mark.parametrize("shape", [SHAPES["boxes"], SHAPES["runs"], (32, 200)], ids=["boxes", "runs", "paired"])
def test_stochastic_rounding_is_unbiased(shape):
    """The mean over 2000 seeds of each decoded entry is the entry, within 6 of its standard errors
    (a power-of-two code step has a rounding std of at most 0.35 of the value)."""
    layout, axis = _layout(shape)
    x = jnp.asarray(np.exp(np.random.default_rng(2).standard_normal(shape)), jnp.float32)
    roundtrip = jax.jit(jax.vmap(lambda seed: codec.decode(codec.encode(x, layout, seed, axis=axis), layout, axis)))
    total = sum(np.asarray(roundtrip(jnp.arange(k, k + 250, dtype=jnp.uint32))).sum(0) for k in range(0, 2000, 250))
    mean = total / 2000
    scale = _half_scale_of_each_entry(np.asarray(x), layout, axis)
    exact = np.asarray(x) >= codec.SMALLEST * scale
    assert np.all(np.abs(mean[exact] / np.asarray(x)[exact] - 1) < 6 * 0.36 / np.sqrt(2000))


def test_nan_and_inf_are_stored_finite_and_leave_the_rest_of_their_half_its_values():
    shape = SHAPES["boxes"]
    layout, _ = _layout(shape)
    x = np.full(shape, 0.5, np.float32)
    x[0, 0], x[5, 40] = np.nan, np.inf
    decoded = np.asarray(codec.decode(codec.encode(jnp.asarray(x), layout, jnp.uint32(3)), layout))
    assert np.all(np.isfinite(decoded))
    assert decoded[5, 40] == blocks.LARGEST  # inf clamped to the largest scale
    assert np.all(decoded[1:4, 1:16] == 0.5)  # the NaN's half: its scale is the other entries'


@pytest.mark.parametrize("fill", [0.0, 0.25, 3.0])
@pytest.mark.parametrize("shape", [SHAPES["kernel boxes"], *PAIRED.values()], ids=["kernel boxes", *PAIRED])
def test_filled_holds_the_fill_exactly(fill, shape):
    layout, axis = _layout(shape)
    q = codec.filled(jnp.zeros(shape), fill, layout, axis)
    assert q.nibbles.shape == codec.packed_shape(shape, axis)
    np.testing.assert_array_equal(np.asarray(codec.decode(q, layout, axis)), np.full(shape, fill, np.float32))
    byte, scale = codec.filled_code(fill)
    assert np.all(np.asarray(q.nibbles) == np.asarray(byte)) and np.all(np.asarray(q.half_scales) == float(scale))


def test_entry_j_of_a_chunks_first_half_and_of_its_second_half_share_a_byte():
    shape = SHAPES["tiles"]  # 128 columns: chunks of 16 (the narrowest even shard), halves of 8
    layout, _ = _layout(shape)
    assert codec.chunk(128) == 16 and codec.chunk(1000) == 125 and codec.chunk(6) == 3 and codec.chunk(7) == 7
    x = np.ones(shape, np.float32)
    x[3, 16 + 8 + 5] = 2.0**-3  # entry 5 of the second chunk's second half: code 12 in the high nibble of byte 8 + 5
    q = codec.encode(jnp.asarray(x), layout, None)
    assert int(q.nibbles[3, 8 + 5]) == 15 | (12 << 4) and int(q.nibbles[3, 8 + 4]) == 0xFF
    assert np.all(np.delete(np.asarray(q.nibbles).ravel(), 3 * 64 + 13) == 0xFF)


def test_paired_along_the_first_axis_entry_j_of_a_chunks_halves_share_a_byte():
    shape = SHAPES["paired along the first axis, blocks of its own"]  # 64 rows: chunks of 8, halves of 4
    layout, axis = _layout(shape)
    x = np.ones(shape, np.float32)
    x[8 + 4 + 1, 7] = 2.0**-3  # row 1 of the second chunk's second half: the high nibble of byte row 4 + 1
    q = codec.encode(jnp.asarray(x), layout, None, axis=axis)
    assert q.nibbles.shape == (32, 1000, 1)
    assert int(q.nibbles[4 + 1, 7, 0]) == 15 | (12 << 4) and int(q.nibbles[4 + 1, 6, 0]) == 0xFF
    assert np.all(np.delete(np.asarray(q.nibbles).ravel(), 5 * 1000 + 7) == 0xFF)


@pytest.mark.parametrize("shape", [SHAPES["tiles"], *PAIRED.values()], ids=["tiles", *PAIRED])
def test_quarter_maxima_read_from_the_codes_bound_the_values(shape):
    layout, axis = _layout(shape)
    x = jnp.asarray(np.exp(np.random.default_rng(5).standard_normal(shape) * 2), jnp.float32)
    q = codec.encode(x, layout, None, axis=axis)
    quarters = np.asarray(codec.stored_quarter_maxima(q, layout, axis))
    decoded = codec.decode(q, layout, axis)
    from_value = np.asarray(codec.half_maxima(decoded, layout, 4, axis)).reshape(quarters.shape)
    np.testing.assert_allclose(quarters, from_value, rtol=1e-6)
