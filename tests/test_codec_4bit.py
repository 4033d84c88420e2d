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
}


def _layout(shape: tuple[int, ...]) -> blocks.Layout:
    layout = blocks.block_layout(shape)
    assert layout is not None and codec.fits(layout, shape)
    return layout


def _half_scale_of_each_entry(x: np.ndarray, layout: blocks.Layout) -> np.ndarray:
    """Each entry's half block's largest magnitude, the array's shape (by encoding the maxima themselves)."""
    return np.asarray(codec.decode(codec.Nibbles(*_top_codes(x, layout)), layout))


def _top_codes(x: np.ndarray, layout: blocks.Layout) -> tuple[jax.Array, jax.Array]:
    quantized = codec.encode(jnp.asarray(x), layout, None)
    return jnp.full_like(quantized.nibbles, 0xFF), quantized.half_scales  # every code 15: the scale itself


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_shapes_and_the_layout_read_back(shape):
    layout = _layout(shape)
    q = codec.encode(jnp.ones(shape), layout, None)
    assert q.nibbles.dtype == jnp.uint8 and q.nibbles.shape == codec.packed_shape(shape) == (
        *shape[:-1],
        shape[-1] // 2,
    )
    assert q.half_scales.shape == codec.scales_shape(shape, layout) == (*blocks.scales_shape(shape, layout), 2)
    assert codec.layout_of(q.nibbles.shape, q.half_scales.shape) == layout
    entries_per_scale = np.prod(shape) / q.half_scales.size
    assert entries_per_scale <= 128


def test_odd_or_padded_last_extents_do_not_fit_and_foreign_shapes_are_refused():
    assert not codec.fits(blocks.block_layout((1280, 1000)), (1280, 1000))  # boxes of 2 x 125
    assert not codec.fits(blocks.block_layout((3, 3, 17, 31)), (3, 3, 17, 31))  # runs over several axes, padded
    assert not codec.fits(None, (10,))
    with pytest.raises(ValueError, match="fit no block layout"):
        codec.layout_of((16, 128), (3, 3, 2))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_powers_of_two_within_14_binades_of_their_half_round_trip_exactly(shape):
    layout = _layout(shape)
    rng = np.random.default_rng(0)
    x = (2.0 ** rng.integers(-14, 1, shape)).astype(np.float32)
    x[..., ::8] = 1.0  # every half holds a 1 (its scale)
    for seed in (None, jnp.uint32(7)):
        np.testing.assert_array_equal(np.asarray(codec.decode(codec.encode(jnp.asarray(x), layout, seed), layout)), x)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_every_value_is_a_power_of_two_of_its_half_scale_never_zero_and_nearest_rounds_to_the_nearer(shape):
    layout = _layout(shape)
    x = np.exp(np.random.default_rng(1).standard_normal(shape) * 3).astype(np.float32)
    scale = _half_scale_of_each_entry(x, layout)
    decoded = np.asarray(codec.decode(codec.encode(jnp.asarray(x), layout, None), layout))
    fraction = decoded / scale
    exponents = np.log2(fraction)
    np.testing.assert_array_equal(exponents, np.round(exponents))
    assert fraction.min() >= codec.SMALLEST and fraction.max() <= 1
    small = x < codec.SMALLEST * scale  # stored as the smallest code: rounded up, never to 0
    np.testing.assert_array_equal(fraction[small], codec.SMALLEST)
    below = 2.0 ** np.floor(np.log2(x[~small] / scale[~small])) * scale[~small]
    nearer = np.where(x[~small] - below < 2 * below - x[~small], below, 2 * below)
    np.testing.assert_allclose(decoded[~small], nearer, rtol=1e-6)


@pytest.mark.parametrize("shape", [SHAPES["boxes"], SHAPES["runs"]], ids=["boxes", "runs"])
def test_stochastic_rounding_is_unbiased(shape):
    """The mean over 2000 seeds of each decoded entry is the entry, within 6 of its standard errors
    (a power-of-two code step has a rounding std of at most 0.35 of the value)."""
    layout = _layout(shape)
    x = jnp.asarray(np.exp(np.random.default_rng(2).standard_normal(shape)), jnp.float32)
    roundtrip = jax.jit(jax.vmap(lambda seed: codec.decode(codec.encode(x, layout, seed), layout)))
    total = sum(np.asarray(roundtrip(jnp.arange(k, k + 250, dtype=jnp.uint32))).sum(0) for k in range(0, 2000, 250))
    mean = total / 2000
    scale = _half_scale_of_each_entry(np.asarray(x), layout)
    exact = np.asarray(x) >= codec.SMALLEST * scale
    assert np.all(np.abs(mean[exact] / np.asarray(x)[exact] - 1) < 6 * 0.36 / np.sqrt(2000))


def test_nan_and_inf_are_stored_finite_and_leave_the_rest_of_their_half_its_values():
    shape = SHAPES["boxes"]
    layout = _layout(shape)
    x = np.full(shape, 0.5, np.float32)
    x[0, 0], x[5, 40] = np.nan, np.inf
    decoded = np.asarray(codec.decode(codec.encode(jnp.asarray(x), layout, jnp.uint32(3)), layout))
    assert np.all(np.isfinite(decoded))
    assert decoded[5, 40] == blocks.LARGEST  # inf clamped to the largest scale
    assert np.all(decoded[1:4, 1:16] == 0.5)  # the NaN's half: its scale is the other entries'


@pytest.mark.parametrize("fill", [0.0, 0.25, 3.0])
def test_filled_holds_the_fill_exactly(fill):
    shape = SHAPES["kernel boxes"]
    layout = _layout(shape)
    q = codec.filled(jnp.zeros(shape), fill, layout)
    np.testing.assert_array_equal(np.asarray(codec.decode(q, layout)), np.full(shape, fill, np.float32))
    byte, scale = codec.filled_code(fill)
    assert np.all(np.asarray(q.nibbles) == np.asarray(byte)) and np.all(np.asarray(q.half_scales) == float(scale))


def test_entry_j_of_a_chunks_first_half_and_of_its_second_half_share_a_byte():
    shape = SHAPES["tiles"]  # 128 columns: chunks of 16 (the narrowest even shard), halves of 8
    layout = _layout(shape)
    assert codec.chunk(128) == 16 and codec.chunk(1000) == 125 and codec.chunk(6) == 3 and codec.chunk(7) == 7
    x = np.ones(shape, np.float32)
    x[3, 16 + 8 + 5] = 2.0**-3  # entry 5 of the second chunk's second half: code 12 in the high nibble of byte 8 + 5
    q = codec.encode(jnp.asarray(x), layout, None)
    assert int(q.nibbles[3, 8 + 5]) == 15 | (12 << 4) and int(q.nibbles[3, 8 + 4]) == 0xFF
    assert np.all(np.delete(np.asarray(q.nibbles).ravel(), 3 * 64 + 13) == 0xFF)


def test_quarter_maxima_read_from_the_codes_bound_the_values():
    shape = SHAPES["tiles"]
    layout = _layout(shape)
    x = jnp.asarray(np.exp(np.random.default_rng(5).standard_normal(shape) * 2), jnp.float32)
    q = codec.encode(x, layout, None)
    quarters = np.asarray(codec.stored_quarter_maxima(q, layout))
    decoded = codec.decode(q, layout)
    from_value = np.asarray(codec.half_maxima(decoded, layout, 4)).reshape(quarters.shape)
    np.testing.assert_allclose(quarters, from_value, rtol=1e-6)
