"""The 8-bit block-wise storage (issue 12 groundwork): layout, exactness, unbiased rounding, no NaN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmsprop_jax import _codec_8bit as s8

FORMATS = {"unsigned": s8.UNSIGNED, "signed": s8.SIGNED}


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((256, 512), s8.TILES),
        ((3, 64, 64), s8.Layout("boxes", block=(3, 8, 8))),  # 64 split 8 ways: 8 rows, 8 columns
        ((16, 4096), s8.RUNS),  # 16 split 2 ways leaves 8 rows: no tile
        ((4096,), s8.RUNS),
        ((24, 512), s8.Layout("boxes", block=(3, 64))),
        ((8, 16), None),  # too small
        ((4097,), s8.Layout("runs", 1, 241)),  # 17 x 241: no padding, no even sharding
        ((4099,), s8.RUNS),  # prime: 16 runs of 256 and a padded last one of 3
        ((1280, 1000), s8.Layout("boxes", block=(2, 125))),  # a classifier: 1000 split 8 ways is 125 wide
        ((40, 1000), s8.Layout("runs", 1, 125)),
        ((16, 257), s8.RUNS),  # each row: 256 and a padded 1 (257 has no even sharding)
        ((100, 100), s8.Layout("boxes", block=(5, 25))),
        ((100, 64), s8.Layout("boxes", block=(25, 8))),  # the embedding: 64 split 8 ways is 8 wide
        ((3, 3, 40, 240), s8.Layout("boxes", block=(1, 1, 5, 30))),  # an HWIO kernel: the last two axes first
        ((5, 5, 672, 1), s8.Layout("boxes", block=(1, 5, 42, 1))),  # a depthwise kernel
        ((3, 3, 17, 31), s8.Layout("runs", 2, 256)),  # odd axes: no even sharding, rows of 527 padded
        ((4096, 2), s8.Layout("boxes", block=(256, 1))),  # 2 columns split 2 ways: 1 wide
    ],
)
def test_layout_follows_from_the_shape(shape, layout):
    assert s8.block_layout(shape) == layout


def _roundtrip(x, layout, fmt, seed=0):
    q = s8.encode(jnp.asarray(x, jnp.float32), layout, fmt, jnp.uint32(seed))
    return q, np.asarray(s8.decode(q, layout, fmt))


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@pytest.mark.parametrize(("shape", "layout"), [((32, 256), s8.TILES), ((4, 1024), s8.RUNS)])
def test_codes_keep_the_shape_and_each_entry_lands_on_a_neighbouring_code(fmt, shape, layout):
    rng = np.random.default_rng(0)
    x = rng.lognormal(0.0, 1.0, shape) * (rng.choice([-1, 1], shape) if fmt.signed else 1)
    q, decoded = _roundtrip(x, layout, fmt)
    assert q.codes.dtype == jnp.uint8 and q.codes.shape == shape
    assert q.scales.dtype == jnp.float32
    assert q.scales.shape == ((shape[0] // 16, shape[1] // 16) if layout == s8.TILES else (shape[0], shape[1] // 256))
    assert np.all(np.sign(decoded) == np.sign(x))
    relative = np.abs(decoded / x - 1)
    assert relative.max() < 2.0**-fmt.mantissa_bits  # within one mantissa step (values span under 5 decades)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_each_blocks_largest_magnitude_is_exact(fmt):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 1.0, (4, 1024)) * (rng.choice([-1, 1], (4, 1024)) if fmt.signed else 1)
    _, decoded = _roundtrip(x, s8.RUNS, fmt)
    blocks, original = decoded.reshape(4, 4, 256), np.asarray(x, np.float32).reshape(4, 4, 256)
    where = np.abs(original).argmax(axis=-1)
    np.testing.assert_array_equal(
        np.take_along_axis(blocks, where[..., None], -1), np.take_along_axis(original, where[..., None], -1)
    )


@pytest.mark.parametrize("value", [0.3, 1e-3, 3e-9, 2e-10])  # normal codes, and E5M3's subnormal range
def test_rounding_is_unbiased(value):
    x = np.full((1, 256), value, np.float32)
    x[0, 0] = 1.0  # the block's maximum, which fixes the scale
    means = [_roundtrip(x, s8.RUNS, s8.UNSIGNED, seed)[1][0, 1:].mean() for seed in range(300)]
    assert abs(np.mean(means) / np.float32(value) - 1) < 3e-3


def test_zeros_tiny_and_huge_never_give_nan():
    x = np.zeros((2, 256), np.float32)
    x[1, :3] = [1e-30, 1e-20, 1e10]
    for fmt in FORMATS.values():
        q, decoded = _roundtrip(x, s8.RUNS, fmt)
        assert np.all(np.isfinite(decoded)) and np.all(np.isfinite(np.asarray(q.scales)))
        assert np.all(decoded[0] == 0)  # an all-zero block
        assert decoded[1, 2] == np.float32(1e10)
        assert 0 <= decoded[1, 0] <= 1e10 * fmt.subnormal_step and np.all(decoded[1, 3:] == 0)


def test_jit_equals_eager_and_the_seed_changes_the_rounding():
    x = jnp.asarray(np.random.default_rng(2).lognormal(0, 2, (64, 64)), jnp.float32)

    def roundtrip(x, seed):
        return s8.decode(s8.encode(x, s8.TILES, s8.UNSIGNED, seed), s8.TILES, s8.UNSIGNED)

    eager = roundtrip(x, jnp.uint32(5))
    np.testing.assert_array_equal(jax.jit(roundtrip)(x, jnp.uint32(5)), eager)
    assert not np.array_equal(roundtrip(x, jnp.uint32(6)), eager)


def test_a_given_upper_bound_scale_is_kept_and_the_rounding_stays_unbiased():
    x = np.full((1, 256), 0.3, np.float32)
    bound = jnp.asarray([[2.0]], jnp.float32)  # above the block's largest entry
    decoded = [
        np.asarray(
            s8.decode(s8.encode(jnp.asarray(x), s8.RUNS, s8.UNSIGNED, jnp.uint32(seed), bound), s8.RUNS, s8.UNSIGNED)
        )
        for seed in range(300)
    ]
    q = s8.encode(jnp.asarray(x), s8.RUNS, s8.UNSIGNED, jnp.uint32(0), bound)
    np.testing.assert_array_equal(q.scales, bound)
    assert abs(np.mean(decoded) / np.float32(0.3) - 1) < 3e-3
    clipped = s8.decode(
        s8.encode(jnp.asarray(x) * 10, s8.RUNS, s8.UNSIGNED, jnp.uint32(0), bound), s8.RUNS, s8.UNSIGNED
    )
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
            jnp.asarray(x, jnp.float32), s8.TILES, fmt, None if seed is None else jnp.uint32(seed), scale
        )
        decoded = s8.decode(q, s8.TILES, fmt)
        np.testing.assert_array_equal(np.asarray(value).view(np.uint32), np.asarray(decoded).view(np.uint32))


def test_the_layout_rule_reads_one_shards_shape_where_it_is_given():
    """The layout is the global shape's wherever its blocks fit the shards (every even sharding up to 8
    ways does); only a sharding beyond that (16 ways, or uneven) falls back to one shard's extents."""
    assert s8.block_layout((64, 96)) == s8.Layout("boxes", block=(8, 12))
    for local in [(64, 48), (64, 24), (64, 12), (32, 96), (8, 96), (8, 12)]:  # 2-, 4- and 8-way shards
        assert s8.block_layout((64, 96), local) == s8.block_layout((64, 96))
    assert s8.block_layout((8, 1024), (8, 128)) == s8.block_layout((8, 1024)) == s8.Layout("runs", 1, 128)
    assert s8.block_layout((100, 64), (100, 8)) == s8.block_layout((100, 64))
    # 16 ways: shards of 6 columns cut the 12-column boxes; one shard's own rule: runs of 6 are too short
    assert s8.layout_decision((64, 96), (64, 6)) == (None, "no block fits its shards (64x6)")
    assert s8.block_layout((64, 4096), (64, 256)) == s8.RUNS  # 16 ways, each shard holding whole runs
    assert s8.block_layout((64, 4096), (64, 128)) == s8.TILES  # 32 ways: one shard's own rule, tiles
    assert s8.layout_decision((4096, 16), (4096, 1)) == (None, "no block fits its shards (4096x1)")
    assert s8.layout_decision((10, 10)) == (None, "100 entries < 4096")


def test_every_layout_keeps_whole_blocks_under_every_even_sharding_up_to_8_ways():
    """For shapes of real models and the tests, each 2-, 4- and 8-way split of each axis into equal
    shards falls between blocks: a sharded step needs no collective and equals one device's."""
    shapes = [
        (4096, 1024),
        (64, 128),
        (256, 16),
        (100, 64),
        (40, 1000),
        (24, 509),
        (4096,),
        (3, 3, 672, 1),
        (1, 1, 672, 112),
        (3, 3, 64, 64),
        (1280, 1000),
        (5000,),
        (3, 3, 40, 240),
        (128, 256),
        (120, 84),
        (768, 3072),
        (197, 768),
        (7, 7, 3, 64),
        (1, 1, 1280, 1000),
    ]
    for shape in shapes:
        layout = s8.block_layout(shape)
        assert layout is not None, shape
        ones = jax.ShapeDtypeStruct(shape, jnp.float32)  # the codes' and scales' shapes, nothing computed
        q = jax.eval_shape(lambda x, layout=layout: s8.encode(x, layout, s8.UNSIGNED, jnp.uint32(0)), ones)
        assert s8.layout_of(q.codes.shape, q.scales.shape) == layout
        for axis, extent in enumerate(shape):
            for ways in (2, 4, 8):
                if extent % ways == 0:
                    local = (*shape[:axis], extent // ways, *shape[axis + 1 :])
                    assert s8.block_layout(shape, local) == layout, (shape, local)
                    assert s8.shards_keep_blocks_whole(layout, shape, local), (shape, local)


@pytest.mark.parametrize("fmt", [s8.UNSIGNED, s8.SIGNED], ids=["unsigned", "signed"])
@pytest.mark.parametrize("given_scale", [False, True], ids=["exact scale", "bound inf"])
def test_a_block_holding_inf_keeps_finite_codes_and_scales(fmt, given_scale):
    """inf is clamped to the largest magnitude kept (2**126) before the scale is taken, and so is a bound
    that is inf: no scale or value is inf or NaN, and (exact scales) the other blocks keep their values."""
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.0, (32, 32)), jnp.float32).at[0, 0].set(jnp.inf)
    scale = jnp.full((2, 2), jnp.inf, jnp.float32) if given_scale else None
    q, value = s8.encode_with_value(x, s8.TILES, fmt, jnp.uint32(3), scale)
    decoded = s8.decode(q, s8.TILES, fmt)
    assert np.all(np.isfinite(np.asarray(q.scales))) and np.all(np.isfinite(np.asarray(decoded)))
    assert float(q.scales[0, 0]) == s8.LARGEST and float(decoded[0, 0]) == s8.LARGEST
    np.testing.assert_array_equal(np.asarray(value), np.asarray(decoded))
    if not given_scale:  # each entry on a neighbouring code: within 1/8 of a binade
        np.testing.assert_allclose(np.asarray(decoded[16:, 16:]), np.asarray(x[16:, 16:]), rtol=0.13)


RAGGED = {  # shapes that no 16 x 16 tile or run of 256 divides: (shape, the scales' shape)
    "classifier": ((40, 1000), (40, 4)),
    "hwio": ((3, 3, 40, 240), (3, 3, 40)),
    "depthwise": ((5, 5, 672, 1), (5, 5, 3)),
    "odd": ((4097,), (17,)),
    "padded prime": ((4099,), (17,)),
    "padded rows": ((16, 257), (16, 2)),
}


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@pytest.mark.parametrize(("shape", "scale_shape"), RAGGED.values(), ids=RAGGED)
def test_ragged_runs_keep_the_shape_and_each_entry_lands_on_a_neighbouring_code(fmt, shape, scale_shape):
    rng = np.random.default_rng(0)
    x = rng.lognormal(0.0, 1.0, shape) * (rng.choice([-1, 1], shape) if fmt.signed else 1)
    layout = s8.layout_of(shape, scale_shape)  # a runs layout (as a checkpoint of the earlier rule holds)
    assert layout.kind == "runs"
    q, decoded = _roundtrip(x, layout, fmt)
    assert q.codes.dtype == jnp.uint8 and q.codes.shape == shape and q.scales.shape == scale_shape
    assert np.all(np.sign(decoded) == np.sign(x))
    assert np.abs(decoded / x - 1).max() < 2.0**-fmt.mantissa_bits
    rows = np.abs(np.asarray(x, np.float32)).reshape(*scale_shape[:-1], -1)  # each run's entries, in order
    length = layout.run_length
    padded = np.pad(rows, [(0, 0)] * (rows.ndim - 1) + [(0, scale_shape[-1] * length - rows.shape[-1])])
    np.testing.assert_array_equal(q.scales, padded.reshape(*scale_shape, length).max(axis=-1))  # exact maxima


def test_padding_never_moves_a_scale_nor_reaches_the_values():
    """A row's last run is shorter than 256: its scale is the largest of its real entries, however
    small (padding that held anything but zeros would raise it), and its entries round as any others."""
    x = np.full((16, 509), 1.0, np.float32)  # 509 is prime: runs of 256 and 253
    x[:, 256:] = np.linspace(1e-6, 2e-6, 253, dtype=np.float32)[::-1]  # the short run: small, largest first
    layout = s8.block_layout(x.shape)
    assert layout == s8.RUNS
    q, decoded = _roundtrip(x, layout, s8.UNSIGNED)
    np.testing.assert_array_equal(q.scales, np.tile(np.float32([1.0, 2e-6]), (16, 1)))
    np.testing.assert_allclose(decoded[:, 256:], x[:, 256:], rtol=2.0**-3)
    means = [_roundtrip(x, layout, s8.UNSIGNED, seed)[1][:, 257:].mean() for seed in range(200)]
    assert abs(np.mean(means) / x[:, 257:].mean() - 1) < 3e-3  # unbiased in the short run too


def test_ragged_runs_jit_equals_eager_and_the_seed_changes_the_rounding():
    x = jnp.asarray(np.random.default_rng(3).lognormal(0, 2, (3, 3, 40, 240)), jnp.float32)
    layout = s8.Layout("runs", 2, 240)

    def roundtrip(x, seed):
        return s8.decode(s8.encode(x, layout, s8.UNSIGNED, seed), layout, s8.UNSIGNED)

    eager = roundtrip(x, jnp.uint32(5))
    np.testing.assert_array_equal(jax.jit(roundtrip)(x, jnp.uint32(5)), eager)
    assert not np.array_equal(roundtrip(x, jnp.uint32(6)), eager)


def test_halving_an_axis_that_is_not_a_power_of_two_writes_no_padded_copy(monkeypatch):
    """Boxes of 2 x 125 (a (1280, 1000) kernel's): the 125 entries are halved from their first and
    last 64, which overlap, instead of a copy padded to 128 (a pass over the array of its own)."""
    monkeypatch.setattr(s8, "PARALLEL_MAXIMA", 0)
    layout = s8.Layout("boxes", block=(2, 125))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((8, 500)).astype(np.float32))
    compiled = jax.jit(s8.half_maxima, static_argnums=1).lower(x, layout).compile().as_text()
    assert " pad(" not in compiled
    blocks = np.abs(np.asarray(x)).reshape(4, 2, 4, 125).transpose(0, 2, 1, 3).reshape(4, 4, -1)
    np.testing.assert_array_equal(np.asarray(s8.half_maxima(x, layout)).max(-1), blocks.max(-1))


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((32, 64), s8.TILES),
        ((4, 1024), s8.RUNS),
        ((3, 300), s8.Layout("runs", 1, 150)),
        ((5, 257), s8.RUNS),
        ((4, 386), s8.Layout("runs", 1, 193)),
        ((2, 3, 40, 240), s8.Layout("runs", 2, 240)),
        ((64, 128), s8.Layout("boxes", block=(8, 16))),
        ((3, 3, 40, 240), s8.Layout("boxes", block=(1, 3, 5, 15))),
        ((100, 64), s8.Layout("boxes", block=(25, 8))),
    ],
    ids=[
        "tiles",
        "runs",
        "even runs of 150",
        "padded runs",
        "odd runs of 193",
        "runs over two axes",
        "boxes",
        "boxes over 3 axes",
        "odd boxes",
    ],
)
@pytest.mark.parametrize("parallel_from", [0, 1 << 62], ids=["halving", "reduction"])
def test_half_maxima_give_the_block_maximum_and_a_bound_of_its_second_largest(
    fmt, shape, layout, parallel_from, monkeypatch
):
    """Both ways of taking the maxima (elementwise halving for large arrays, a reduction for small
    ones: ``PARALLEL_MAXIMA``) give each block's maximum bit for bit."""
    monkeypatch.setattr(s8, "PARALLEL_MAXIMA", parallel_from)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::97] *= 1e6  # some blocks with one huge entry
    if not fmt.signed:
        x = np.abs(x)
    halves = np.asarray(s8.half_maxima(jnp.asarray(x), layout))
    blocks = np.abs(np.asarray(s8.blocked(jnp.asarray(x), layout)))
    if layout.kind == "boxes":  # each block's entries last
        nd = len(layout.block)
        blocks = np.transpose(blocks, [*range(0, 2 * nd, 2), *range(1, 2 * nd, 2)])
    elif layout.kind == "tiles":
        blocks = np.moveaxis(blocks, -3, -2)
    blocks = blocks.reshape(*halves.shape[:-1], -1)
    top_two = np.sort(blocks, axis=-1)[..., -2:]
    np.testing.assert_array_equal(halves.max(-1), top_two[..., 1])  # the block's maximum, bit for bit
    assert np.all(halves.min(-1) <= top_two[..., 0])  # at most the second largest
    q = s8.encode(jnp.asarray(x), layout, fmt, jnp.uint32(5))
    stored = np.asarray(s8.stored_half_maxima(q, layout, fmt))
    np.testing.assert_array_equal(stored, np.asarray(s8.half_maxima(s8.decode(q, layout, fmt), layout)))


def _binade_values(fmt: s8.Format) -> np.ndarray:
    """Values at four points of every binade a format's codes reach, from below its smallest code to 1
    (none exactly representable)."""
    lowest = int(np.log2(fmt.subnormal_step)) - 1
    return np.array([2.0**e * (1 + f) for e in range(lowest, 0) for f in (0.03, 0.37, 0.77, 0.97)], np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
def test_every_binade_is_rounded_without_bias(fmt):
    """Each value's decoded mean over 2048 seeds x 12 entries is the value: |z| < 5 for every value of
    every binade (the top of E5M3's subnormal range, [2**-31, 2**-30), was +0.1% high: |z| > 20)."""
    values = _binade_values(fmt)
    copies = 12
    x = np.ones((copies * len(values) // 255 + 1, 256), np.float32)  # column 0: each block's maximum, 1
    flat = x[:, 1:].reshape(-1)
    flat[: copies * len(values)] = np.tile(values, copies)
    x[:, 1:] = flat.reshape(x.shape[0], 255)

    @jax.jit
    def decoded(seeds: jax.Array) -> jax.Array:
        def one(seed: jax.Array) -> jax.Array:
            return s8.decode(s8.encode(jnp.asarray(x), s8.RUNS, fmt, seed), s8.RUNS, fmt)[:, 1:].reshape(-1)

        return jax.vmap(one)(seeds)[:, : copies * len(values)].reshape(-1, copies, len(values))

    samples = np.asarray(decoded(jnp.arange(2048, dtype=jnp.uint32)), np.float64).reshape(-1, len(values))
    mean, spread = samples.mean(axis=0), samples.std(axis=0) / np.sqrt(samples.shape[0])
    z = np.where(spread > 0, (mean - values) / np.where(spread > 0, spread, 1), 0)
    worst = int(np.argmax(np.abs(z)))
    assert np.all(spread > 0), "every value lies between two codes"
    assert np.abs(z).max() < 5, f"value {values[worst]:.4g} (2**{np.log2(values[worst]):.2f}): z = {z[worst]:.1f}"


FILL_LAYOUTS = {
    "tiles": ((32, 256), s8.TILES),
    "boxes": ((3, 64, 64), s8.Layout("boxes", block=(3, 8, 8))),
    "runs": ((16, 4096), s8.RUNS),
    "padded runs": ((4099,), s8.RUNS),
    "runs over 2 axes": ((3, 3, 17, 31), s8.Layout("runs", 2, 256)),
}


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS)
@pytest.mark.parametrize(("shape", "layout"), FILL_LAYOUTS.values(), ids=FILL_LAYOUTS)
@pytest.mark.parametrize("fill", [0.0, 1e-30, 1e-8, 0.1, 1.0, 3.0, 1e30])
def test_a_constant_fill_is_the_encode_of_the_constant_and_decodes_to_it_exactly(fmt, shape, layout, fill):
    zeros = jnp.zeros(shape)
    filled = s8.filled(zeros, fill, layout, fmt)
    value = np.float32(fill)
    assert value * (np.float32(1) / value) == 1 if fill else True  # where the stochastic encode is exact too
    encoded = s8.encode(zeros + fill, layout, fmt, jnp.uint32(0))
    np.testing.assert_array_equal(filled.codes, encoded.codes)
    np.testing.assert_array_equal(filled.scales, encoded.scales)
    assert s8.scales_shape(shape, layout) == encoded.scales.shape
    np.testing.assert_array_equal(s8.decode(filled, layout, fmt), np.full(shape, value))
