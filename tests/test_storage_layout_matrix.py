"""Every storage (float32, bfloat16, 8-bit, 4-bit) in every layout (per leaf, packed), one test body each:
jit and vmap, the optax wrappers, Flax NNX, the float32 view, conversion and checkpoints.

Each cell is compared with the float32 per-leaf run of the same optimizer, within what its
storage keeps: float32 to rounding, bfloat16 to its 8 bits of mantissa, 8-bit codes to their
block-relative precision, 4-bit codes to a power of two. The params give every cell something to
do: ``w`` (64 x 128) is 8-bit (or 4-bit) in boxes of 8 x 16, the three 16-entry biases pack into
one group with momentum, and in the cells with a 4-bit state ``h`` (32 x 200) keeps codes paired
along its first axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import run_steps

import rmsprop_jax
from rmsprop_jax import checkpoint

STORAGES = {"float32": None, "bfloat16": "bfloat16", "8bit": "8bit", "4bit": "4bit"}
LAYOUTS = {"per_leaf": False, "packed": True}
RTOL = {"float32": 1e-5, "bfloat16": 5e-2, "8bit": 0.2, "4bit": 1.0}  # 4-bit: a code step is a factor 2
"""How far a cell's updates may be from the float32 per-leaf run's, relative to each leaf's largest."""

MATRIX = pytest.mark.parametrize(
    ("storage", "layout"), [(s, layout) for s in STORAGES for layout in LAYOUTS], ids=lambda v: v
)


def _params(*storages: str) -> dict[str, jax.Array]:
    """w and the biases; with a 4-bit storage among ``storages`` also h, whose codes pair along its rows."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((64, 128)), jnp.float32)}
    params |= {f"b{i}": jnp.asarray(rng.standard_normal(16), jnp.float32) for i in range(3)}
    if "4bit" in storages:
        params["h"] = jnp.asarray(rng.standard_normal((32, 200)), jnp.float32)
    return params


def _grads(params: dict, step: float) -> dict:
    return jax.tree.map(lambda p: jnp.sin(3.0 * p + step) * (1.0 + p * p), params)


def _biased_grads(params: dict, step: float) -> dict:
    """Gradients of one sign with a spread of 10%: the moments a narrow state must follow are far from 0."""
    return jax.tree.map(lambda p: 1.0 + 0.1 * jnp.sin(3.0 * p + step), params)


def _mostly_close(got: object, want: object, storage: str) -> None:
    """Each leaf within float32's tolerance of ``want`` in all but 1 entry in 500 (a stored value that
    crossed a rounding boundary), and within the storage's tolerance everywhere."""
    _close(got, want, storage)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        apart = np.abs(a - b) > RTOL["float32"] * scale + 1e-30
        assert apart.sum() <= max(1, a.size // 500), (int(apart.sum()), a.size)


def _rmsprop(storage: str, layout: str, learning_rate: float = 1e-2, **options: object) -> optax.GradientTransformation:
    return rmsprop_jax.rmsprop(
        learning_rate, state_dtype=STORAGES[storage], pack_small_leaves=LAYOUTS[layout], **options
    )  # pyright: ignore[reportArgumentType]


def _close(got: object, want: object, storage: str) -> None:
    """Each leaf of ``got`` within the storage's tolerance of ``want``, relative to the leaf's largest entry."""
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        assert np.max(np.abs(a - b), initial=0.0) <= RTOL[storage] * scale + 1e-30, (np.max(np.abs(a - b)), scale)


def _equal(a: object, b: object) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _stored_as_asked(state: rmsprop_jax.RmsPropState, storage: str, layout: str) -> None:
    """The state is kept as the cell asks: w 8-bit (or in the float dtype), the biases packed or not."""
    report = {leaf.path: leaf for leaf in rmsprop_jax.state_report(state).leaves}
    assert (
        report["['w']"].storage
        == {"float32": "float32", "bfloat16": "bfloat16", "8bit": "8bit boxes of 8x16", "4bit": "4bit boxes of 8x16"}[
            storage
        ]
    )
    assert report["['b0']"].packing.startswith("group") == (layout == "packed")
    if storage == "4bit":
        assert report["['h']"].storage == "4bit boxes of 4x25 paired along axis -2"


@MATRIX
def test_jit_equals_eager(storage, layout):
    tx = _rmsprop(storage, layout, momentum=0.9, centered=True)
    params = _params(storage)
    eager = run_steps(tx, params, (_grads, range(5)), jit=False)
    jitted = run_steps(tx, params, (_grads, range(5)))
    _stored_as_asked(jitted[1], storage, layout)
    # XLA fuses the jitted step (one rounding of a float32 product may differ): compare the params
    # to float32's rounding. Under a rounding storage such an ulp can also move a stored value across a
    # rounding boundary (one code step), which reaches that entry's later steps: a few entries only.
    if storage == "float32":
        _close(jitted[0], eager[0], "float32")
    else:
        _mostly_close(jitted[0], eager[0], storage)
    views = [rmsprop_jax.state_as_float32(run[1]) for run in (eager, jitted)]
    _close(views[1], views[0], storage)  # a code may flip at a rounding boundary


@MATRIX
def test_vmap_over_a_batch_of_models_equals_each_model_alone(storage, layout):
    tx = _rmsprop(storage, layout, momentum=0.9)
    batch = jax.tree.map(lambda p: jnp.stack([p, 2 * p, -p]), _params(storage))
    state = jax.vmap(tx.init)(batch)
    updates, state = jax.jit(jax.vmap(tx.update))(jax.tree.map(jnp.cos, batch), state, batch)
    one = jax.tree.map(lambda p: p[1], batch)
    alone_updates, alone_state = jax.jit(tx.update)(jax.tree.map(jnp.cos, one), tx.init(one), one)
    _close(jax.tree.map(lambda x: x[1], updates), alone_updates, "float32")
    # the rounding is keyed by the element's index within its model: each model draws its own model's bits
    _close(
        rmsprop_jax.state_as_float32(jax.tree.map(lambda x: x[1], state)),
        rmsprop_jax.state_as_float32(alone_state),
        "float32",
    )


@MATRIX
def test_chain_and_inject_hyperparams_with_the_state_dtype_by_name(storage, layout):
    inner = optax.inject_hyperparams(rmsprop_jax.rmsprop, static_args=("state_dtype", "pack_small_leaves"))
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        # decay traced: the buffer's 8-bit scale bound falls back to a reduction over the step
        inner(
            learning_rate=0.1, decay=0.9, momentum=0.5, state_dtype=STORAGES[storage], pack_small_leaves=LAYOUTS[layout]
        ),
    )
    params = _params(storage)
    state = tx.init(params)
    step = jax.jit(tx.update)
    updates, state = step(_grads(params, 0), state, params)
    _stored_as_asked(state[1].inner_state, storage, layout)
    reference = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(0.1, decay=0.9, momentum=0.5))
    _close(updates, reference.update(_grads(params, 0), reference.init(params), params)[0], storage)
    state[1].hyperparams["learning_rate"] = jnp.asarray(0.0)
    state[1].hyperparams["momentum"] = jnp.asarray(0.0)
    updates, state = step(_grads(params, 1), state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))


@MATRIX
def test_multi_steps_accumulates_then_applies(storage, layout):
    inner = _rmsprop(storage, layout, 0.1, momentum=0.9)
    tx = optax.MultiSteps(inner, every_k_schedule=3)
    params = _params(storage)
    state = tx.init(params)
    grads = [_biased_grads(params, i) for i in range(3)]
    for g in grads[:2]:
        updates, state = tx.update(g, state, params)
        assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    updates, state = tx.update(grads[2], state, params)
    mean = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    # MultiSteps averages in its own order: an 8-bit entry on a code boundary may round the other way
    _close(
        updates, inner.update(mean, inner.init(params), params)[0], "float32" if storage == "float32" else "bfloat16"
    )


@MATRIX
def test_apply_if_finite_skips_a_nan_step_and_keeps_the_state(storage, layout):
    tx = optax.apply_if_finite(_rmsprop(storage, layout, 0.1, momentum=0.9), max_consecutive_errors=3)
    params = _params(storage)
    state = tx.init(params)
    _, state = tx.update(_grads(params, 0), state, params)
    before = state.inner_state
    bad = _grads(params, 1)
    bad["w"] = bad["w"].at[0, 0].set(jnp.nan)
    updates, state = jax.jit(tx.update)(bad, state, params)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))
    _equal(state.inner_state, before)
    assert int(state.notfinite_count) == 1


@MATRIX
def test_masked_and_multi_transform(storage, layout):
    params = _params(storage)
    grads = _grads(params, 0)
    mask = {"w": True, "b0": True, "b1": True, "b2": False} | ({"h": True} if "h" in params else {})
    masked = optax.masked(_rmsprop(storage, layout, 0.1, momentum=0.9), mask)
    updates, _ = masked.update(grads, masked.init(params), params)
    np.testing.assert_array_equal(updates["b2"], grads["b2"])  # untouched
    reference = rmsprop_jax.rmsprop(0.1, momentum=0.9)
    want, _ = reference.update(grads, reference.init(params), params)
    _close({k: updates[k] for k in mask if k != "b2"}, {k: want[k] for k in mask if k != "b2"}, storage)

    labels = {"w": "rms", "b0": "rms", "b1": "rms", "b2": "sgd"} | ({"h": "rms"} if "h" in params else {})
    rms = _rmsprop(storage, layout, 0.1, centered=True, momentum=0.9)
    multi = optax.multi_transform({"rms": rms, "sgd": optax.sgd(0.1)}, labels)
    updates, _ = jax.jit(multi.update)(grads, multi.init(params), params)
    np.testing.assert_allclose(updates["b2"], -0.1 * grads["b2"], rtol=1e-6)
    reference = rmsprop_jax.rmsprop(0.1, centered=True, momentum=0.9)
    want, _ = reference.update(grads, reference.init(params), params)
    _close({k: updates[k] for k in mask if k != "b2"}, {k: want[k] for k in mask if k != "b2"}, storage)


class _TwoLayers(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.first = nnx.Linear(64, 64, rngs=rngs)  # 4096-entry kernels: 8-bit; the biases pack
        self.second = nnx.Linear(64, 64, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.second(jnp.tanh(self.first(x)))


@MATRIX
def test_flax_nnx_optimizer_trains_a_model(storage, layout):
    model = _TwoLayers(nnx.Rngs(0))
    tx = _rmsprop(storage, layout, 3e-3, momentum=0.9)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((256, 64)), jnp.float32)
    y = jnp.tanh(x @ jnp.asarray(rng.standard_normal((64, 64)) / 8, jnp.float32)) + 0.3

    @nnx.jit
    def train_step(model: _TwoLayers, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, x, y)) for _ in range(300)]
    assert losses[-1] < 0.05 * losses[0]
    assert isinstance(optimizer.opt_state, rmsprop_jax.RmsPropState)
    if (storage, layout) == ("8bit", "per_leaf"):  # NNX keeps the codes and the scales
        kernel_state = jax.tree.leaves(optimizer.opt_state.nu["first"]["kernel"])
        assert [leaf.dtype for leaf in kernel_state] == [jnp.uint8, jnp.float32]
    state = nnx.as_pure(optimizer.opt_state)
    assert isinstance(state, rmsprop_jax.RmsPropState)
    report = {leaf.path: leaf for leaf in rmsprop_jax.state_report(state).leaves}
    assert (
        report["['first']['kernel']"].storage
        == {"float32": "float32", "bfloat16": "bfloat16", "8bit": "8bit boxes of 8x8", "4bit": "4bit boxes of 8x8"}[
            storage
        ]
    )
    assert report["['first']['bias']"].packing.startswith("group") == (layout == "packed")
    view = rmsprop_jax.state_as_float32(state)
    assert view.nu["first"]["kernel"].dtype == jnp.float32 and view.nu["first"]["kernel"].shape == (64, 64)


@MATRIX
def test_the_view_holds_the_float32_runs_moments(storage, layout):
    variant = {"centered": True, "momentum": 0.9}
    _, exact, _ = run_steps(rmsprop_jax.rmsprop(1e-3, **variant), _params(storage), (_biased_grads, range(6)))
    _, state, _ = run_steps(_rmsprop(storage, layout, 1e-3, **variant), _params(storage), (_biased_grads, range(6)))
    view = rmsprop_jax.state_as_float32(state)
    assert jax.tree.structure(view._replace(count=None)) == jax.tree.structure(exact)
    for field in ("nu", "mu", "trace"):
        if storage == "4bit":  # power-of-two codes: an entry may sit a code or two off (on average 20% here)
            for a, b in zip(jax.tree.leaves(getattr(view, field)), jax.tree.leaves(getattr(exact, field)), strict=True):
                assert np.mean(np.abs(np.asarray(a) - np.asarray(b))) <= 0.25 * np.mean(np.abs(np.asarray(b))), field
        else:
            _close(getattr(view, field), getattr(exact, field), storage)
    if storage == "float32":  # a float32 state's view is the state itself, per leaf
        _equal(view, rmsprop_jax.convert_state(state, rmsprop_jax.rmsprop(1e-3, **variant).init(_params(storage))))


@MATRIX
@pytest.mark.parametrize("target", [f"{s}/{layout}" for s in STORAGES for layout in LAYOUTS])
def test_convert_state_moves_a_run_to_any_storage_and_layout(storage, layout, target):
    variant = {"centered": True, "momentum": 0.9}
    schedule = optax.linear_schedule(1e-3, 1e-4, 50)
    target_storage, target_layout = target.split("/")
    old_tx = rmsprop_jax.rmsprop(schedule, state_dtype=STORAGES[storage], pack_small_leaves=LAYOUTS[layout], **variant)
    new_tx = rmsprop_jax.rmsprop(
        schedule, state_dtype=STORAGES[target_storage], pack_small_leaves=LAYOUTS[target_layout], **variant
    )
    params, state, _ = run_steps(old_tx, _params(storage, target_storage), (_biased_grads, range(7)))
    converted = rmsprop_jax.convert_state(state, new_tx.init(params))
    assert jax.tree.structure(converted) == jax.tree.structure(new_tx.init(params))
    _stored_as_asked(converted, target_storage, target_layout)
    assert int(converted.count) == 7
    coarser = max((storage, target_storage), key=RTOL.__getitem__)
    _close(rmsprop_jax.state_as_float32(converted), rmsprop_jax.state_as_float32(state), coarser)
    if (storage, layout) == (target_storage, target_layout):
        _equal(converted, state)
    updates, _ = new_tx.update(_grads(params, 7.0), converted, params)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


@MATRIX
def test_a_checkpoint_resumes_bit_identically(storage, layout, tmp_path):
    def make() -> optax.GradientTransformation:
        schedule = optax.cosine_decay_schedule(1e-2, 20)
        return rmsprop_jax.rmsprop(
            schedule, momentum=0.9, centered=True, state_dtype=STORAGES[storage], pack_small_leaves=LAYOUTS[layout]
        )

    tx, params = make(), _params(storage)
    full = run_steps(tx, params, (_grads, range(12)))[:2]
    part = run_steps(tx, params, (_grads, range(5)))[:2]
    checkpoint.save(tmp_path / "step5", {"params": part[0], "opt_state": part[1]})
    restored = checkpoint.restore(tmp_path / "step5", {"params": params, "opt_state": make().init(params)})
    _stored_as_asked(restored["opt_state"], storage, layout)
    resumed = run_steps(tx, restored["params"], (_grads, range(5, 12)), state=restored["opt_state"])[:2]
    _equal(resumed, full)
