"""The step with a 4-bit state: no stalling at decay 0.999 and 0.9999, the update bound, no NaN, the
outlier cap, and how far it ends from the float32 state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import hard_gradients, load_script, scan_steps

import rmsprop_jax
from rmsprop_jax import _codec_4bit as codec
from rmsprop_jax import _dtypes as dtypes

SHAPE = (16, 256)  # nu in 4 bits: the 8-bit boxes of 2 x 32, halves of 2 x 16
PAIRED = "paired along the first axis"
SHAPES = {"boxes": SHAPE, "runs": (8, 512), PAIRED: (32, 200)}  # the last: boxes of 4 x 25


def _run(tx: optax.GradientTransformation, grads: jax.Array, params: jax.Array | None = None) -> tuple:
    return scan_steps(tx, jnp.zeros(grads.shape[1:], jnp.float32) if params is None else params, grads)


def _kept(shape: tuple[int, ...]) -> np.ndarray:
    """Entries that keep |g| = 1, one per 8 along the last axis (each half block keeps its maximum)."""
    kept = np.zeros(shape, bool)
    kept[..., ::8] = True
    return kept


def _dropping_gradients(steps: int, drop_at: int, shape: tuple[int, ...]) -> jax.Array:
    """The :func:`_kept` entries keep |g| = 1; the others |g| = 0.1, falling to 0.01 at ``drop_at``."""
    rng = np.random.default_rng(0)
    signs = np.where(rng.random((steps, *shape)) < 0.5, -1.0, 1.0)
    size = np.where(np.arange(steps).reshape(-1, *[1] * len(shape)) < drop_at, 0.1, 0.01) * np.ones(shape)
    size[:, _kept(shape)] = 1.0
    return jnp.asarray(signs * size, jnp.float32)


def _dropped_ratio(decay: float, shape: tuple[int, ...], nearest: pytest.MonkeyPatch | None = None) -> float:
    """The 4-bit state's mean ``nu`` over the dropped entries against float32's, after a 10x drop and
    ``3 / (1 - decay)`` steps (where float32's average has fallen 20x)."""
    drop_at = 100
    steps = drop_at + int(3 / (1 - decay))
    grads = _dropping_gradients(steps, drop_at, shape)
    if nearest is not None:  # every rounding seed None: round to nearest
        nearest.setattr(dtypes, "rounding_seed", lambda *args: None)
    start = {"nu": 0.01}  # the dropped entries' average before the drop, so that only the drop is followed
    narrow, exact = (
        rmsprop_jax.scale_by_rms(decay=decay, initial_scale=start["nu"], state_dtype=s) for s in ("4bit", None)
    )
    _, state4, _ = _run(narrow, grads)
    assert isinstance(state4.nu, codec.Nibbles)
    _, state32, _ = _run(exact, grads)
    dropped = ~_kept(shape)
    nu4 = np.asarray(rmsprop_jax.state_as_float32(state4).nu)[dropped]
    return float(np.mean(nu4) / np.mean(np.asarray(state32.nu)[dropped]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "decay"),
    [
        (shape, decay)
        for name, shape in SHAPES.items()
        for decay in (0.999, 0.9999)
        if (name, decay) != (PAIRED, 0.9999)
    ],
    ids=lambda v: v if isinstance(v, float) else next(name for name, shape in SHAPES.items() if shape == v),
)
def test_stochastic_rounding_follows_a_10x_gradient_drop(shape, decay):
    """At 0.9999 on the last-axis layouts only: the paired one shares their rounding (30,000 steps, 18 s)."""
    assert abs(_dropped_ratio(decay, shape) - 1) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("decay", [0.999, 0.9999])
def test_the_same_drop_stalls_with_nearest_rounding(monkeypatch, decay):
    """The control: round-to-nearest freezes the average at its old value."""
    assert _dropped_ratio(decay, SHAPE, monkeypatch) > 5


def _mixed_gradients(steps: int, shape: tuple[int, ...] = SHAPE) -> jax.Array:
    """Jumping gradients, with the first half block holding 1e-3 beside 1e6 (nu spans 18 decades)."""
    grads = np.stack(hard_gradients(steps, shape, seed=3))
    grads[:, :2, :16] = np.where(np.arange(32).reshape(2, 16) % 2, 1e-3, 1e6)
    return jnp.asarray(grads)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
@pytest.mark.parametrize("decay", [0.9, 0.99, 0.999])
def test_update_never_exceeds_lr_over_sqrt_one_minus_decay(decay, shape):
    lr = 0.01
    _, _, updates = _run(rmsprop_jax.rmsprop(lr, decay=decay, state_dtype="4bit"), _mixed_gradients(60, shape))
    assert np.all(np.isfinite(updates))
    assert float(np.max(np.abs(updates))) <= lr / np.sqrt(1 - decay) * (1 + 1e-5)


@pytest.mark.parametrize("variant", [{}, {"momentum": 0.9}, {"centered": True, "momentum": 0.9}])
@pytest.mark.parametrize("case", ["zeros", "tiny", "mixed", "zero half", "overflowing square"])
def test_no_nan_and_no_half_block_contaminated(variant, case):
    rng = np.random.default_rng(2)
    g = rng.standard_normal(SHAPE).astype(np.float32)
    if case == "zeros":
        g[:] = 0
    elif case == "tiny":
        g[:] = 1e-30
    elif case == "mixed":
        g[:2, :16] = np.where(rng.random((2, 16)) < 0.5, 1e-20, 1e10)
    elif case == "zero half":
        g[:2, :16] = 0
    else:
        g[0, 0] = 1e20  # its square overflows float32
    grads = jnp.asarray(np.stack([g] * 5 + [rng.standard_normal(SHAPE).astype(np.float32)] * 5))
    params, state, updates = _run(rmsprop_jax.rmsprop(0.01, state_dtype="4bit", **variant), grads)
    assert isinstance(state.nu, codec.Nibbles)
    view = rmsprop_jax.state_as_float32(state)
    for leaf in (params, updates, *jax.tree.leaves(state)):
        assert np.all(np.isfinite(np.asarray(leaf))), case
    for leaf in jax.tree.leaves(view):
        assert not np.any(np.isnan(np.asarray(leaf))), case
    if case == "overflowing square":  # the entry is capped; the rest of its half is never 0, and near float32's
        nu = np.asarray(view.nu)[:2, :16].ravel()
        exact = np.asarray(rmsprop_jax.state_as_float32(_run(rmsprop_jax.rmsprop(0.01, **variant), grads)[1]).nu)
        rest, rest32 = nu[1:], exact[:2, :16].ravel()[1:]
        assert nu[0] >= rest.max() and np.all(rest > 0)
        # Within a code (a factor 2) of float32's; centered, the capped entry's variance grows its half's scale
        # by GROWTH per step, and after the burst the rest sits at the smallest code, 2**-14 of it: measured 4.1x
        # float32's median there (8 bits, with 33 binades, keep 1.0x). Overestimated: their steps shorten.
        assert 0.5 < np.median(rest / rest32) < (8 if variant.get("centered") else 2)


def test_a_nan_gradient_entry_gives_that_entry_a_nan_update_and_the_state_stays_finite():
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, centered=True, state_dtype="4bit")
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
def test_one_huge_entry_leaves_the_rest_of_its_half_block_near_its_float32_steps(case, size, steps, variant):
    """benchmarks/outlier_8bit.py's measurement with a 4-bit state, per 100-step window: the spiked
    entry's neighbours step within 25% of float32 on average (the 8-bit state holds 15%), and a leaf
    or a row that grows as a whole is not clipped. One entry's 100-step mean carries a power-of-two
    code's noise at decay 0.99 (over the large row's 16 entries, steps 100-400: 0.52x to 1.63x
    float32's nu, 1.08x on average), so the entry itself is held to a factor 2. A row of 1e4 x the rest
    puts 1e8 between the square averages of one half block, beyond the 14 binades of its codes: the
    rest of those halves is stored at the smallest code, overestimated, and steps far less (measured:
    the tile's other entries step 0.61-0.70x float32's on average, the halves without the row 1.0x).
    The lower bound is 0.5 there: overestimated averages shorten steps, never lengthen them."""
    script = load_script("benchmarks/outlier_8bit.py")
    grads = script.gradients(steps, 0, case, size)
    options = {"decay": 0.99, **script.VARIANTS[variant]}
    narrow, exact = script.updates(options, "4bit", grads), script.updates(options, "float32", grads)
    ratios = script.windows(narrow, exact, 100, case)
    assert len(ratios["neighbours"]) >= 3
    low = 0.5 if case == "row" else 0.75
    assert all(low < ratio < 1.33 for ratio in ratios["neighbours"]), ratios["neighbours"]
    if case in ("row", "jump"):
        assert all(0.5 < ratio < 2 for ratio in ratios["entry"]), ratios["entry"]
    else:  # the spiked entry itself: float32 stops it for good (its g^2 overflows); 4-bit steps it far below normal
        assert max(ratios["entry_8bit"]) < 0.25


def _relative_difference(a: jax.Array, b: jax.Array) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.mean(np.abs(a - b)) / np.mean(np.abs(b)))


@pytest.mark.parametrize(("variant", "bound"), [({}, 5e-3), ({"momentum": 0.9}, 0.03)], ids=["plain", "momentum"])
def test_60_steps_of_jumping_gradients_end_near_the_float32_run(variant, bound):
    """Mean |p4 - p32| over mean |p32|: 8-bit's figures are 1e-3 and 1e-2 (``test_leaf_update_8bit.py``)."""
    grads = jnp.asarray(np.stack(hard_gradients(60, (64, 256))))
    start = jnp.asarray(np.random.default_rng(4).standard_normal((64, 256)), jnp.float32)
    p4 = _run(rmsprop_jax.rmsprop(1e-3, state_dtype="4bit", **variant), grads, start)[0]
    p8 = _run(rmsprop_jax.rmsprop(1e-3, state_dtype="8bit", **variant), grads, start)[0]
    p32 = _run(rmsprop_jax.rmsprop(1e-3, **variant), grads, start)[0]
    assert _relative_difference(p8, p32) < _relative_difference(p4, p32) <= bound


@pytest.mark.parametrize(
    ("variant", "bound"), [({"centered": True}, 5e-3), ({"centered": True, "momentum": 0.9}, 0.03)], ids=["c", "cm"]
)
def test_a_leaf_under_4096_entries_steps_with_nu_in_4_bits_and_mu_in_float32(variant, bound):
    """1024 to 4095 entries: nu 4-bit, mu and the buffer float32 (8 bits' size rule); the centered
    majorant reads mu's halves from its values. Near float32 after 60 steps, as the large leaf is."""
    shape = (64, 63)
    grads = jnp.asarray(np.stack(hard_gradients(60, shape)))
    start = jnp.asarray(np.random.default_rng(4).standard_normal(shape), jnp.float32)
    p4, state, updates = _run(rmsprop_jax.rmsprop(1e-3, state_dtype="4bit", **variant), grads, start)
    assert isinstance(state.nu, codec.Nibbles) and state.mu.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(updates)))
    p32 = _run(rmsprop_jax.rmsprop(1e-3, **variant), grads, start)[0]
    assert _relative_difference(p4, p32) <= bound < _relative_difference(start, p32)  # 10x closer than the start


def test_a_gradient_that_flips_sign_is_not_clipped_by_the_centered_variance_bound():
    """As for 8 bits: after 30 steps of g = +1 (the variance near 0), one step of g = -1; the stored
    variance follows float32's within a power-of-two code."""
    kwargs = {"decay": 0.9, "eps": 1e-8, "centered": True}
    exact_tx, narrow_tx = rmsprop_jax.scale_by_rms(**kwargs), rmsprop_jax.scale_by_rms(**kwargs, state_dtype="4bit")
    params = jnp.zeros(SHAPE)
    _, exact, _ = _run(exact_tx, jnp.ones((30, *SHAPE)))
    narrow = rmsprop_jax.convert_state(exact, narrow_tx.init(params))
    flip = -jnp.ones(SHAPE)
    _, exact = exact_tx.update(flip, exact, params)
    _, narrow = narrow_tx.update(flip, narrow, params)
    variance = np.asarray(exact.nu - exact.mu**2)
    stored = np.asarray(codec.decode(narrow.nu, *codec.layout_of(narrow.nu.nibbles.shape, narrow.nu.half_scales.shape)))
    assert np.all(stored >= variance / 2) and np.all(stored <= variance * 2)
    assert abs(np.mean(stored) / np.mean(variance) - 1) < 0.1
