"""The step with an 8-bit state: no stalling, the update bound, the centered form, no NaN, parity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import hard_gradients, load_script, scan_steps

import rmsprop_jax
from rmsprop_jax import _codec_8bit as codec
from rmsprop_jax import _dtypes as dtypes

SHAPE = (16, 256)  # 4096 entries: quantized in boxes of 2 x 32 (16 rows split 8 ways are 2 rows)
RAGGED = (3, 3, 17, 31)  # a kernel whose 527-entry rows (17 x 31) hold runs of 256, 256 and a padded 15
SHAPES = {"boxes": SHAPE, "ragged runs": RAGGED}


def _first_block(x: np.ndarray) -> np.ndarray:
    """A view of the entries of ``x``'s first block (``x`` of a shape in :data:`SHAPES`)."""
    return x[:16, :16] if x.shape == SHAPE else x.reshape(-1)[:256]


def _run(tx: optax.GradientTransformation, grads: jax.Array, params: jax.Array | None = None) -> tuple:
    """Scans ``tx`` over a stack of gradients; returns the final params, state and every update."""
    return scan_steps(tx, jnp.zeros(grads.shape[1:], jnp.float32) if params is None else params, grads)


def _kept(shape: tuple[int, ...]) -> np.ndarray:
    """Entries that keep |g| = 1, at least one in every block (so each block's maximum stays put):
    one per 16 x 16 tile, or every 16th entry of the ragged kernel (each run but the 15-entry ones)."""
    kept = np.zeros(shape, bool)
    if shape == SHAPE:
        kept[::16, ::16] = True
    else:
        kept.reshape(-1)[::16] = True
    return kept


def _dropping_gradients(steps: int, drop_at: int, shape: tuple[int, ...]) -> jax.Array:
    """The :func:`_kept` entries keep |g| = 1; the others have |g| = 0.1 with random signs and fall
    to 0.01 at ``drop_at``."""
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((steps, *shape)) < 0.5, -1.0, 1.0)
    size = np.where(np.arange(steps).reshape(-1, *[1] * len(shape)) < drop_at, 0.1, 0.01) * np.ones(shape)
    size[:, _kept(shape)] = 1.0
    return jnp.asarray(signs * size, jnp.float32)


def _dropped_ratio(monkeypatch: pytest.MonkeyPatch | None, shape: tuple[int, ...]) -> float:
    grads = _dropping_gradients(3000, 1000, shape)
    if monkeypatch is not None:  # every rounding seed None: round to nearest
        monkeypatch.setattr(dtypes, "rounding_seed", lambda *args: None)
    _, state8, _ = _run(rmsprop_jax.scale_by_rms(decay=0.999, state_dtype="8bit"), grads)
    assert isinstance(state8.nu, codec.Quantized)
    _, state32, _ = _run(rmsprop_jax.scale_by_rms(decay=0.999), grads)
    dropped = ~_kept(shape)
    nu8 = np.asarray(rmsprop_jax.state_as_float32(state8).nu)[dropped]
    return float(np.mean(nu8) / np.mean(np.asarray(state32.nu)[dropped]))


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_stochastic_rounding_follows_a_10x_gradient_drop_at_decay_0_999(shape):
    assert abs(_dropped_ratio(None, shape) - 1) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_the_same_drop_stalls_with_nearest_rounding(monkeypatch, shape):
    """The control: round-to-nearest freezes the average near its old value."""
    assert _dropped_ratio(monkeypatch, shape) > 2


def _mixed_gradients(steps: int, shape: tuple[int, ...] = SHAPE) -> jax.Array:
    """The tests' jumping gradients, with one block holding 1e-3 beside 1e6 (nu spans 18 decades)."""
    grads = np.stack(hard_gradients(steps, shape, seed=3))
    for g in grads:
        _first_block(g)[:] = np.where(np.arange(256).reshape(_first_block(g).shape) % 2, 1e-3, 1e6)
    return jnp.asarray(grads)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
@pytest.mark.parametrize("decay", [0.9, 0.99, 0.999])
def test_update_never_exceeds_lr_over_sqrt_one_minus_decay(decay, shape):
    lr = 0.01
    _, _, updates = _run(rmsprop_jax.rmsprop(lr, decay=decay, state_dtype="8bit"), _mixed_gradients(60, shape))
    bound = lr / np.sqrt(1 - decay)
    assert np.all(np.isfinite(updates))
    assert float(np.max(np.abs(updates))) <= bound * (1 + 1e-5)


def test_without_the_bound_the_small_entries_beside_large_ones_would_step_further():
    """What the bound guards against: their decoded nu is 0 (below the block's smallest code)."""
    tx = rmsprop_jax.rmsprop(0.01, decay=0.9, state_dtype="8bit")
    _, state, _ = _run(tx, _mixed_gradients(5))
    nu = np.asarray(rmsprop_jax.state_as_float32(state).nu)
    small = nu[:16, :16][np.arange(256).reshape(16, 16) % 2 == 1]
    assert np.all(small == 0)  # so g / sqrt(nu + eps) would be 0.01 * 1e-3 / 1e-4 = 0.1, above 0.01 / sqrt(0.1)


def _centered_problem(steps: int = 500) -> jax.Array:
    """Gradients whose mean (1) dominates their spread (0.1)."""
    rng = np.random.default_rng(1)
    return jnp.asarray(1.0 + 0.1 * rng.standard_normal((steps, *SHAPE)), jnp.float32)


def _quantized(x: jax.Array, fmt: codec.Format, seed: jax.Array) -> jax.Array:
    layout = codec.block_layout(SHAPE)
    assert layout is not None
    return codec.decode(codec.encode(x, layout, fmt, seed), layout, fmt)


def _naive_8bit_steps(grads: jax.Array, decay: float, eps: float) -> np.ndarray:
    """|g| / sqrt(E[g^2] - E[g]^2 + eps) with E[g^2] and E[g] each kept in the 8-bit codes."""

    def step(carry: tuple, inputs: tuple) -> tuple:
        nu, mu = carry
        g, t = inputs
        seed = t.astype(jnp.uint32) * 2
        nu = _quantized(decay * nu + (1 - decay) * g * g, codec.UNSIGNED, seed)
        mu = _quantized(decay * mu + (1 - decay) * g, codec.SIGNED, seed + 1)
        return (nu, mu), jnp.abs(g) / jnp.sqrt(jnp.maximum(nu - mu * mu, 0) + eps)

    zeros = jnp.zeros(SHAPE, jnp.float32)
    _, steps = jax.lax.scan(step, (zeros, zeros), (grads, jnp.arange(grads.shape[0])))
    return np.asarray(steps)


def test_centered_8bit_keeps_the_variance_where_the_naive_form_cancels():
    decay, eps, grads = 0.95, 1e-8, _centered_problem()
    scaled32 = np.asarray(_run(rmsprop_jax.scale_by_rms(decay=decay, eps=eps, centered=True), grads)[2])
    scaled8 = np.asarray(
        _run(rmsprop_jax.scale_by_rms(decay=decay, eps=eps, centered=True, state_dtype="8bit"), grads)[2]
    )
    naive = _naive_8bit_steps(grads, decay, eps)
    late = slice(100, None)  # after the averages have settled
    ratio8 = np.abs(scaled8[late]) / np.abs(scaled32[late])
    naive_ratio = naive[late] / np.abs(scaled32[late])
    assert np.max(naive_ratio) > 100  # the problem makes the naive 8-bit form diverge
    assert np.max(ratio8) < 2 and 0.5 < np.median(ratio8) < 1.5


def test_centered_8bit_with_bias_correction_is_refused():
    with pytest.raises(ValueError, match=r"bias_correction.*8bit"):
        rmsprop_jax.rmsprop(0.1, centered=True, bias_correction=True, state_dtype="8bit")
    rmsprop_jax.rmsprop(0.1, centered=True, bias_correction=True, state_dtype="bfloat16")  # float states keep it


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
@pytest.mark.parametrize("variant", [{}, {"momentum": 0.9}, {"centered": True, "momentum": 0.9}])
@pytest.mark.parametrize(
    "case",
    ["zeros", "tiny", "mixed", "zero blocks", "overflowing square"],
)
def test_no_nan_and_no_block_contaminated(variant, case, shape):
    rng = np.random.default_rng(2)
    g = rng.standard_normal(shape).astype(np.float32)
    if case == "zeros":
        g[:] = 0
    elif case == "tiny":
        g[:] = 1e-30
    elif case == "mixed":
        _first_block(g)[:] = np.where(rng.random(_first_block(g).shape) < 0.5, 1e-20, 1e10)
    elif case == "zero blocks":
        _first_block(g)[:] = 0
    else:
        g.reshape(-1)[0] = 1e20  # its square overflows float32
    grads = jnp.asarray(np.stack([g] * 5 + [rng.standard_normal(shape).astype(np.float32)] * 5))
    tx = rmsprop_jax.rmsprop(0.01, state_dtype="8bit", **variant)
    params, state, updates = _run(tx, grads)
    assert isinstance(state.nu, codec.Quantized)
    view = rmsprop_jax.state_as_float32(state)
    for leaf in (params, updates, *jax.tree.leaves(state)):
        assert np.all(np.isfinite(np.asarray(leaf))), case
    for leaf in jax.tree.leaves(view):  # centered: E[g^2] = var + E[g]^2 of a 1e20 gradient is inf in float32
        assert not np.any(np.isnan(np.asarray(leaf))), case
    if case == "overflowing square":  # the entry is capped; the rest of its block keeps float32's values
        nu = _first_block(np.asarray(view.nu)).ravel()
        float32_state = _run(rmsprop_jax.rmsprop(0.01, **variant), grads)[1]
        exact = _first_block(np.asarray(rmsprop_jax.state_as_float32(float32_state).nu))
        rest, rest32 = nu[1:], exact.ravel()[1:]
        assert nu[0] >= rest.max()  # still the block's largest
        assert np.mean(rest == 0) < 0.01 and 0.8 < np.median(rest / rest32) < 1.25


def _relative_difference(a: jax.Array, b: jax.Array) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.mean(np.abs(a - b)) / np.mean(np.abs(b)))


def _parity(**variant: object) -> float:
    grads = jnp.asarray(np.stack(hard_gradients(60, (64, 256))))
    start = jnp.asarray(np.random.default_rng(4).standard_normal((64, 256)), jnp.float32)
    p8 = _run(rmsprop_jax.rmsprop(1e-3, state_dtype="8bit", **variant), grads, start)[0]
    p32 = _run(rmsprop_jax.rmsprop(1e-3, **variant), grads, start)[0]
    return _relative_difference(p8, p32)


def test_60_steps_of_jumping_gradients_stay_within_1e_3_of_the_float32_state():
    """Mean |p8 - p32| over mean |p32| (the issue's <= 1e-3; the docs' Numerics page reports it and the movement's)."""
    assert _parity() <= 1e-3


def test_with_momentum_the_difference_is_the_buffers_rounding_noise():
    """Reported on the docs' Numerics page: the buffer's 8-bit noise (a few % per entry, unbiased) enters each
    step directly rather than through a square root, so the figure is larger than plain's."""
    plain, momentum = _parity(), _parity(momentum=0.9)
    assert plain < momentum < 0.01


def test_a_gradient_that_flips_sign_is_not_clipped_by_the_centered_variance_bound():
    """The stored variance's new term is decay * (1 - decay) * |g - mu|^2, and |g - mu| exceeds
    max(|g|, |mu|) when g turns against mu: its block scale must bound it by (|g| + |mu|)^2, or the
    new variance is clipped at the scale. 30 steps of g = +1 in float32 (mu near 1, the variance near
    0), converted to 8-bit (exact scales, no slack), then one step of g = -1."""
    kwargs = {"decay": 0.9, "eps": 1e-8, "centered": True}
    exact_tx, narrow_tx = rmsprop_jax.scale_by_rms(**kwargs), rmsprop_jax.scale_by_rms(**kwargs, state_dtype="8bit")
    params = jnp.zeros(SHAPE)
    _, exact, _ = _run(exact_tx, jnp.ones((30, *SHAPE)))
    narrow = rmsprop_jax.convert_state(exact, narrow_tx.init(params))
    flip = -jnp.ones(SHAPE)
    _, exact = exact_tx.update(flip, exact, params)
    _, narrow = narrow_tx.update(flip, narrow, params)
    variance = exact.nu - exact.mu**2  # 0.9 * ~0 + 0.09 * (1 + 0.96)^2 ~ 0.35
    stored = codec.decode(narrow.nu, codec.block_layout(SHAPE), codec.UNSIGNED)  # the variance itself
    np.testing.assert_allclose(np.asarray(stored), np.asarray(variance), rtol=0.13)


@pytest.mark.parametrize("parallel_from", [0, 1 << 62], ids=["halving", "reduction"])
def test_a_nan_gradient_entry_gives_that_entry_a_nan_update_and_the_state_stays_finite(parallel_from, monkeypatch):
    """What Numerics says: the NaN reaches that step's update of that entry only, whichever way the
    block maxima are taken (``PARALLEL_MAXIMA``)."""
    monkeypatch.setattr(codec, "PARALLEL_MAXIMA", parallel_from)
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True, state_dtype="8bit")
    params = {"w": jnp.zeros((64, 64))}
    updates, state = jax.jit(tx.update)({"w": jnp.ones((64, 64)).at[3, 5].set(jnp.nan)}, tx.init(params), params)
    assert np.isnan(updates["w"]).sum() == 1 and np.isnan(updates["w"][3, 5])
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(rmsprop_jax.state_as_float32(state)))
    updates, _ = jax.jit(tx.update)({"w": jnp.ones((64, 64))}, state, params)
    assert np.isfinite(updates["w"]).all()


@pytest.mark.parametrize("variant", ["plain", "centered + momentum"])
@pytest.mark.parametrize(
    ("case", "size", "steps"),
    [("spike", 1e30, 400), ("burst", 1e30, 400), ("jump", 1e3, 400), ("row", 1e4, 300)],
    ids=["one step of 1e30", "ten steps of 1e30", "the whole leaf x1e3", "a row always x1e4"],
)
def test_one_huge_entry_leaves_the_rest_of_its_block_its_float32_steps(case, size, steps, variant):
    """benchmarks/outlier_8bit.py's measurement at decay 0.99, per 100-step window: the spiked entry's
    tile neighbours step as under float32 (issue 27: at most 2x; before the bulk cap one step of 1e30
    made them step 11-12x for thousands of steps), a block that grows as a whole is not clipped, and a
    row that is always 1e4x the rest keeps float32's steps too."""
    script = load_script("benchmarks/outlier_8bit.py")
    grads = script.gradients(steps, 0, case, size)
    options = {"decay": 0.99, **script.VARIANTS[variant]}
    eight, exact = script.updates(options, "8bit", grads), script.updates(options, "float32", grads)
    ratios = script.windows(eight, exact, 100, case)
    assert len(ratios["neighbours"]) >= 3
    assert all(0.85 < ratio < 1.15 for ratio in ratios["neighbours"]), ratios["neighbours"]
    if case in ("row", "jump"):
        assert all(0.8 < ratio < 1.25 for ratio in ratios["entry"]), ratios["entry"]
    else:  # the spiked entry itself: float32 stops it for good (its g^2 overflows); 8-bit steps it far below normal
        assert max(ratios["entry_8bit"]) < 0.2


def _one_value_cases() -> list[tuple[str, dict]]:
    return [("plain", {}), ("momentum", {"momentum": 0.9}), ("centered", {"centered": True})]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "variant"), _one_value_cases(), ids=[n for n, _ in _one_value_cases()])
def test_each_step_uses_the_average_before_rounding_in_every_entry(name, variant):
    """One value per step (issue 28): the 8-bit update is the step of the state as stored before it,
    with each new average used before it is rounded, bit for bit in every entry of a 4096 x 1024 leaf
    over 4 steps (centered: to 1e-6 of a formula written here; a step from another code is 1e-2 off).
    The rounding used to be computed twice, and XLA:CPU compiled the two differently: about one
    entry in 4 million stepped from another code than the one stored."""
    shape, decay, eps, lr = (4096, 1024), 0.9, 1e-8, 1e-2
    tx8 = rmsprop_jax.rmsprop(lr, decay=decay, eps=eps, state_dtype="8bit", **variant)
    tx32 = rmsprop_jax.rmsprop(lr, decay=decay, eps=eps, **variant)
    state = tx8.init(jnp.zeros(shape))

    @jax.jit
    def centered_reference(g: jax.Array, view: rmsprop_jax.RmsPropState) -> jax.Array:
        # the 8-bit centered nu holds the variance (Numerics): var = decay var + decay (1 - decay) |g - mu|^2
        variance = decay * view.nu + decay * (1 - decay) * jnp.square(g - view.mu)
        return -lr * (jax.lax.rsqrt(variance + eps) * g)

    step8, step32 = jax.jit(tx8.update), jax.jit(tx32.update)
    for t in range(4):
        g = jax.random.normal(jax.random.key(t), shape) * jnp.exp(jax.random.normal(jax.random.key(10 + t), shape))
        view = rmsprop_jax.state_as_float32(state)
        if name == "centered":  # the view's nu is E[g^2] = variance + mu^2: read the stored variance itself
            variance = codec.decode(state.nu, codec.block_layout(state.nu.codes.shape), codec.UNSIGNED)
            expected = centered_reference(g, state._replace(nu=variance, mu=view.mu))
        else:
            expected = step32(g, tx32.init(jnp.zeros(shape))._replace(nu=view.nu, mu=view.mu, trace=view.trace))[0]
        update, state = step8(g, state)
        if name == "centered":  # a formula of our own beside the library's: XLA may contract its sums otherwise
            np.testing.assert_allclose(np.asarray(update), np.asarray(expected), rtol=1e-6, err_msg=f"step {t}")
        else:  # the float32 transformation's own step: bit for bit
            np.testing.assert_array_equal(np.asarray(update), np.asarray(expected), err_msg=f"step {t}")
