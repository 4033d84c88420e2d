"""The 8-bit block-wise storage (issue 12 groundwork): layout, exactness, unbiased rounding, no NaN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmsprop_jax import _storage_8bit as s8

FORMATS = {"unsigned": s8.UNSIGNED, "signed": s8.SIGNED}


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((256, 512), "tiles"),
        ((3, 64, 64), "tiles"),
        ((16, 4096), "tiles"),
        ((4096,), "runs"),
        ((24, 512), "runs"),
        ((8, 16), None),  # too small
        ((4097,), None),  # no block fits
        ((100, 100), None),
    ],
)
def test_layout_follows_from_the_shape(shape, layout):
    assert s8.block_layout(shape) == layout


def _roundtrip(x, layout, fmt, seed=0):
    q = s8.encode(jnp.asarray(x, jnp.float32), layout, fmt, jnp.uint32(seed))
    return q, np.asarray(s8.decode(q, layout, fmt))


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@pytest.mark.parametrize(("shape", "layout"), [((32, 256), "tiles"), ((4, 1024), "runs")])
def test_codes_keep_the_shape_and_each_entry_lands_on_a_neighbouring_code(fmt, shape, layout):
    rng = np.random.default_rng(0)
    x = rng.lognormal(0.0, 1.0, shape) * (rng.choice([-1, 1], shape) if fmt.signed else 1)
    q, decoded = _roundtrip(x, layout, fmt)
    assert q.codes.dtype == jnp.uint8 and q.codes.shape == shape
    assert q.scale.dtype == jnp.float32
    assert q.scale.shape == ((shape[0] // 16, shape[1] // 16) if layout == "tiles" else (shape[0], shape[1] // 256))
    assert np.all(np.sign(decoded) == np.sign(x))
    relative = np.abs(decoded / x - 1)
    assert relative.max() < 2.0**-fmt.mantissa_bits  # within one mantissa step (values span under 5 decades)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_each_blocks_largest_magnitude_is_exact(fmt):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 1.0, (4, 1024)) * (rng.choice([-1, 1], (4, 1024)) if fmt.signed else 1)
    _, decoded = _roundtrip(x, "runs", fmt)
    blocks, original = decoded.reshape(4, 4, 256), np.asarray(x, np.float32).reshape(4, 4, 256)
    where = np.abs(original).argmax(axis=-1)
    np.testing.assert_array_equal(
        np.take_along_axis(blocks, where[..., None], -1), np.take_along_axis(original, where[..., None], -1)
    )


@pytest.mark.parametrize("value", [0.3, 1e-3, 3e-9, 2e-10])  # normal codes, and E5M3's subnormal range
def test_rounding_is_unbiased(value):
    x = np.full((1, 256), value, np.float32)
    x[0, 0] = 1.0  # the block's maximum, which fixes the scale
    means = [_roundtrip(x, "runs", s8.UNSIGNED, seed)[1][0, 1:].mean() for seed in range(300)]
    assert abs(np.mean(means) / np.float32(value) - 1) < 3e-3


def test_zeros_tiny_and_huge_never_give_nan():
    x = np.zeros((2, 256), np.float32)
    x[1, :3] = [1e-30, 1e-20, 1e10]
    for fmt in FORMATS.values():
        q, decoded = _roundtrip(x, "runs", fmt)
        assert np.all(np.isfinite(decoded)) and np.all(np.isfinite(np.asarray(q.scale)))
        assert np.all(decoded[0] == 0)  # an all-zero block
        assert decoded[1, 2] == np.float32(1e10)
        assert 0 <= decoded[1, 0] <= 1e10 * fmt.subnormal_step and np.all(decoded[1, 3:] == 0)


def test_jit_equals_eager_and_the_seed_changes_the_rounding():
    x = jnp.asarray(np.random.default_rng(2).lognormal(0, 2, (64, 64)), jnp.float32)

    def roundtrip(x, seed):
        return s8.decode(s8.encode(x, "tiles", s8.UNSIGNED, seed), "tiles", s8.UNSIGNED)

    eager = roundtrip(x, jnp.uint32(5))
    np.testing.assert_array_equal(jax.jit(roundtrip)(x, jnp.uint32(5)), eager)
    assert not np.array_equal(roundtrip(x, jnp.uint32(6)), eager)


def test_a_given_upper_bound_scale_is_kept_and_the_rounding_stays_unbiased():
    x = np.full((1, 256), 0.3, np.float32)
    bound = jnp.asarray([[2.0]], jnp.float32)  # above the block's largest entry
    decoded = [
        np.asarray(
            s8.decode(s8.encode(jnp.asarray(x), "runs", s8.UNSIGNED, jnp.uint32(seed), bound), "runs", s8.UNSIGNED)
        )
        for seed in range(300)
    ]
    q = s8.encode(jnp.asarray(x), "runs", s8.UNSIGNED, jnp.uint32(0), bound)
    np.testing.assert_array_equal(q.scale, bound)
    assert abs(np.mean(decoded) / np.float32(0.3) - 1) < 3e-3
    clipped = s8.decode(s8.encode(jnp.asarray(x) * 10, "runs", s8.UNSIGNED, jnp.uint32(0), bound), "runs", s8.UNSIGNED)
    assert np.all(np.asarray(clipped) == 2.0)  # magnitudes above the bound are clipped to it


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@pytest.mark.parametrize("seed", [None, 3])
def test_the_value_encode_returns_is_what_the_codes_decode_to_bit_for_bit(fmt, seed):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 256)) * np.exp(rng.uniform(-40, 10, (32, 256)))
    x[0, :16] = 0
    x = x if fmt.signed else np.abs(x)
    bound = jnp.asarray(np.abs(x).reshape(2, 16, 16, 16).max(axis=(1, 3)) * 1.7, jnp.float32)
    for scale in (None, bound):
        q, value = s8.encode_with_value(
            jnp.asarray(x, jnp.float32), "tiles", fmt, None if seed is None else jnp.uint32(seed), scale
        )
        decoded = s8.decode(q, "tiles", fmt)
        np.testing.assert_array_equal(np.asarray(value).view(np.uint32), np.asarray(decoded).view(np.uint32))


def test_the_layout_rule_reads_one_shards_shape_where_it_is_given():
    """Without a GPU mesh: the rule of what fits, applied to the shard shape a sharded array would show."""
    assert s8.block_layout((64, 96)) == "tiles"
    assert s8.block_layout((64, 96), (64, 24)) is None  # 24 columns: no 16 x 16 tile, no 256-run
    assert s8.block_layout((64, 96), (32, 96)) == "tiles"
    assert s8.block_layout((8, 1024), (8, 256)) == "runs"
    assert s8.block_layout((8, 1024), (8, 128)) is None
    assert s8.layout_decision((64, 96), (64, 24)) == (None, "no block fits its shards (64x24)")
    assert s8.layout_decision((100, 100)) == (None, "no 16x16 tile or 256-run fits 100x100")
    assert s8.layout_decision((10, 10)) == (None, "100 entries < 4096")


@pytest.mark.parametrize("fmt", [s8.UNSIGNED, s8.SIGNED], ids=["unsigned", "signed"])
@pytest.mark.parametrize("given_scale", [False, True], ids=["exact scale", "bound inf"])
def test_a_block_holding_inf_keeps_finite_codes_and_scales(fmt, given_scale):
    """inf is clamped to the largest magnitude kept (2**126) before the scale is taken, and so is a bound
    that is inf: no scale or value is inf or NaN, and (exact scales) the other blocks keep their values."""
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.0, (32, 32)), jnp.float32).at[0, 0].set(jnp.inf)
    scale = jnp.full((2, 2), jnp.inf, jnp.float32) if given_scale else None
    q, value = s8.encode_with_value(x, "tiles", fmt, jnp.uint32(3), scale)
    decoded = s8.decode(q, "tiles", fmt)
    assert np.all(np.isfinite(np.asarray(q.scale))) and np.all(np.isfinite(np.asarray(decoded)))
    assert float(q.scale[0, 0]) == s8.LARGEST and float(decoded[0, 0]) == s8.LARGEST
    np.testing.assert_array_equal(np.asarray(value), np.asarray(decoded))
    if not given_scale:  # each entry on a neighbouring code: within 1/8 of a binade
        np.testing.assert_allclose(np.asarray(decoded[16:, 16:]), np.asarray(x[16:, 16:]), rtol=0.13)
