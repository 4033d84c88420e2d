"""Sharded params on a 2 x 4 mesh (Auto and Explicit axes): the state follows each param's sharding,
the update compiles to no collective, and a sharded run equals the one-device run."""

from __future__ import annotations

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_cases import (
    EIGHT_BIT,
    LAYOUTS,
    NARROW,
    OPTIMIZERS,
    PACKED_LAYOUTS,
    PACKED_OPTIMIZERS,
    collectives,
    grad_fn,
    group_specs_follow,
    packed_params_on,
    params_8bit_on,
    params_on,
    run_steps,
    sharded_model,
    spec_of,
    state_matches,
)

import rmsprop_jax
from rmsprop_jax import Quantized, checkpoint
from rmsprop_jax import _plan as plans

AXIS_TYPES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}
CASES = {name: (make, params_on) for name, make in OPTIMIZERS.items()}
CASES |= {name: (make, params_8bit_on) for name, make in EIGHT_BIT.items()}


def mesh_of(axis_type: AxisType) -> jax.sharding.Mesh:
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)


def _abstract_state(tx: optax.GradientTransformation, params: dict, axis_type: AxisType) -> object:
    """eval_shape's state on an Explicit mesh; on an Auto mesh abstract values carry no sharding, so the
    compiled init's output shardings."""
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=p.sharding), params)
    if axis_type == AxisType.Explicit:
        return jax.eval_shape(tx.init, abstract)
    return jax.jit(tx.init).lower(abstract).compile().output_shardings


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis", AXIS_TYPES)
def test_state_follows_the_params_update_has_no_collective_and_equals_one_device(axis, layout, name):
    make, make_params = CASES[name]
    axis_type, mesh, tx = AXIS_TYPES[axis], mesh_of(AXIS_TYPES[axis]), make()
    params = make_params(mesh, layout)
    eight_bit = make_params is params_8bit_on
    # Under jax.jit on an Auto mesh init cannot see the shards: n's blocks then follow its global shape
    # and cross its 4-column shards (docs, Numerics: init eagerly, or use an Explicit mesh).
    hidden = axis_type == AxisType.Auto and eight_bit and layout in NARROW
    skip = frozenset({"n"}) if hidden else frozenset()
    with jax.set_mesh(mesh):
        state = tx.init(params)
        assert state_matches(state, params), "eager init"
        jitted_state = jax.jit(tx.init)(params)
        assert state_matches(jitted_state, params, skip), "jitted init"
        assert state_matches(_abstract_state(tx, params, axis_type), params, skip), "abstract init"
        compiled = jax.jit(lambda p, s, g: tx.update(g, s, p)).lower(params, state, grad_fn(params, jnp.float32(0)))
        assert collectives(compiled.compile().as_text()) == []
        sharded = run_steps(tx, params, state=state)
    on_one_device = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)  # the same storages
    single = run_steps(make(), make_params(None, layout), state=on_one_device)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True):
        if eight_bit:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=0, atol=1e-6)
    if eight_bit:
        quantized = sorted(key for key, leaf in state.nu.items() if isinstance(leaf, Quantized))
        # n (256, 16) is quantized unless its shards are 4 columns wide: no tile fits them, nor a run of 16
        assert quantized == (["b", "q", "r", "w"] if layout in NARROW else ["b", "n", "q", "r", "w"])
        jit_quantized = sorted(key for key, leaf in jitted_state.nu.items() if isinstance(leaf, Quantized))
        assert jit_quantized == (["b", "n", "q", "r", "w"] if hidden else quantized)
        # r's runs of 250 fit its 250-column shards, and q's padded rows are never split
        plan = plans.read(state)
        assert str(plan.leaves[3].storages.nu.layout) == "runs of 250" and plan.leaves[3].path == "['r']"


def test_the_collective_check_sees_the_reduction_of_global_norm_clipping():
    mesh = mesh_of(AxisType.Auto)
    params = params_on(mesh, "fsdp")
    clipped = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(1e-2))
    with jax.set_mesh(mesh):
        hlo = jax.jit(lambda p, s, g: clipped.update(g, s, p)).lower(params, clipped.init(params), params)
        assert "all-reduce" in collectives(hlo.compile().as_text())


@pytest.mark.parametrize(("layout", "state_dtype"), [("fsdp", None), ("2d", None), ("fsdp", "8bit"), ("2d", "8bit")])
@pytest.mark.parametrize("axis", AXIS_TYPES)
def test_a_sharded_checkpoint_restores_sharded_and_resumes_bit_identically(axis, layout, state_dtype):
    mesh = mesh_of(AXIS_TYPES[axis])
    tx = rmsprop_jax.rmsprop(
        optax.cosine_decay_schedule(1e-2, 10), momentum=0.9, centered=True, state_dtype=state_dtype
    )
    make_params = params_on if state_dtype is None else params_8bit_on

    @jax.jit
    def step(params: dict, state: object, i: jax.Array) -> tuple:
        updates, state = tx.update(grad_fn(params, i), state, params)
        return optax.apply_updates(params, updates), state

    with jax.set_mesh(mesh), tempfile.TemporaryDirectory() as directory:
        params = make_params(mesh, layout)
        full = (params, tx.init(params))
        for i in range(9):
            full = step(*full, jnp.float32(i))
        part = (params, tx.init(params))
        for i in range(4):
            part = step(*part, jnp.float32(i))
        checkpoint.save(f"{directory}/step4", {"params": part[0], "opt_state": part[1]})
        target = {"params": params, "opt_state": tx.init(params)}
        restored = checkpoint.restore(f"{directory}/step4", target)
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
            assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
        resumed = (restored["params"], restored["opt_state"])
        for i in range(4, 9):
            resumed = step(*resumed, jnp.float32(i))
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        init = nnx.initializers.lecun_normal()
        self.up = nnx.Linear(16, 32, kernel_init=nnx.with_partitioning(init, ("data", "model")), rngs=rngs)
        self.down = nnx.Linear(32, 16, kernel_init=nnx.with_partitioning(init, ("model", "data")), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(nnx.relu(self.up(x)))


def _assert_follows(optimizer: nnx.Optimizer, model: _MLP) -> None:
    params = nnx.state(model, nnx.Param)
    state = nnx.state(optimizer, nnx.OptState)
    for field in ("nu", "trace"):
        for layer in ("up", "down"):
            kernel = params[layer]["kernel"][...]
            moment = state["opt_state"][field][layer]["kernel"][...]
            assert moment.sharding.is_equivalent_to(kernel.sharding, kernel.ndim), (field, layer)
            assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated


def test_nnx_optimizer_state_follows_with_partitioning_eagerly_jitted_and_after_a_step():
    with jax.set_mesh(mesh_of(AxisType.Auto)):
        model = sharded_model(lambda: _MLP(nnx.Rngs(0)))
        _assert_follows(nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-3, momentum=0.9), wrt=nnx.Param), model)

        @nnx.jit
        def create_optimizer(model: _MLP) -> nnx.Optimizer:
            return nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-3, momentum=0.9), wrt=nnx.Param)

        optimizer = create_optimizer(model)
        _assert_follows(optimizer, model)

        @nnx.jit
        def train_step(model: _MLP, optimizer: nnx.Optimizer, x: jax.Array) -> None:
            optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))

        train_step(model, optimizer, jnp.ones((8, 16)))
        _assert_follows(optimizer, model)


@pytest.mark.parametrize("name", PACKED_OPTIMIZERS)
@pytest.mark.parametrize("layout", PACKED_LAYOUTS)
@pytest.mark.parametrize("axis", AXIS_TYPES)
def test_packed_groups_carry_their_members_sharding_and_step_with_no_collective(axis, layout, name):
    """Eager init on any mesh, jitted init on an Explicit mesh: each group is P(None, *its members' spec),
    before and after 5 steps; a q-bias P('model') never shares a group with an out-bias P()."""
    axis_type, make = AXIS_TYPES[axis], PACKED_OPTIMIZERS[name]
    mesh, tx = mesh_of(axis_type), make()
    params = packed_params_on(mesh, layout)
    with jax.set_mesh(mesh):
        state = tx.init(params)
        plan = rmsprop_jax.packing_plan(state)
        jitted_state = jax.jit(tx.init)(params)
        hlo = jax.jit(lambda p, s, g: tx.update(g, s, p)).lower(params, state, grad_fn(params, jnp.float32(0)))
        assert collectives(hlo.compile().as_text()) == []
        stepped, stepped_state = run_steps(tx, params, state=state)
    groups = [sorted(plan.paths[i] for i in group) for group in plan.groups if len(group) > 1]
    assert group_specs_follow(state, params) and group_specs_follow(stepped_state, params)
    assert not any({"['q_bias0']", "['out_bias0']"} <= set(group) for group in groups)
    assert ["['q_bias0']", "['q_bias1']"] in groups or layout in NARROW
    explicit = axis_type == AxisType.Explicit
    assert rmsprop_jax.packing_plan(jitted_state).packs == explicit  # an Auto mesh's tracer shows no sharding
    if explicit:
        assert group_specs_follow(jitted_state, params)
    for key, param in params.items():
        assert stepped[key].sharding.is_equivalent_to(param.sharding, param.ndim), key
    single, _ = run_steps(make(), packed_params_on(None, layout))  # one device, its own grouping
    for key in params:
        np.testing.assert_allclose(np.asarray(stepped[key]), np.asarray(single[key]), rtol=0, atol=1e-6)


class _Heads(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        init, zeros = nnx.initializers.lecun_normal(), nnx.initializers.zeros_init()
        self.q = nnx.List(
            [
                nnx.Linear(
                    16,
                    16,
                    kernel_init=nnx.with_partitioning(init, (None, "model")),
                    bias_init=nnx.with_partitioning(zeros, ("model",)),
                    rngs=rngs,
                )
                for _ in range(3)
            ]
        )
        self.out = nnx.List([nnx.Linear(16, 16, rngs=rngs) for _ in range(3)])

    def __call__(self, x: jax.Array) -> jax.Array:
        for q, out in zip(self.q, self.out, strict=True):
            x = out(jnp.tanh(q(x)))
        return x


def test_nnx_partitioning_metadata_lets_a_jitted_optimizer_pack():
    """Under nnx.jit on an Auto mesh the q layers' with_partitioning metadata shows their sharding: they
    pack, their group is P(None, 'model') in fact and in metadata; the out layers (no metadata) stay per leaf."""
    with jax.set_mesh(mesh_of(AxisType.Auto)):
        model = sharded_model(lambda: _Heads(nnx.Rngs(0)))
        before = {path: leaf.sharding for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model))}

        @nnx.jit
        def create_optimizer(model: _Heads) -> nnx.Optimizer:
            return nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True), wrt=nnx.Param)

        optimizer = create_optimizer(model)

        @nnx.jit
        def train_step(model: _Heads, optimizer: nnx.Optimizer, x: jax.Array) -> None:
            optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))

        train_step(model, optimizer, jnp.ones((8, 16)))
        after = dict(jax.tree_util.tree_leaves_with_path(nnx.state(model)))
        plan = rmsprop_jax.packing_plan(optimizer.opt_state)
        specs = nnx.get_partition_spec(nnx.state(optimizer, nnx.OptState))["opt_state"]
        q_bias = next(i for i, g in enumerate(plan.groups) if "['q'][0]['bias']" in [plan.paths[j] for j in g])
        q_bias_array = optimizer.opt_state.trace.stacked["_".join(map(str, plan.groups[q_bias]))]
        q_bias_array = q_bias_array.get_value() if hasattr(q_bias_array, "get_value") else q_bias_array
    assert [sorted(plan.paths[i] for i in group) for group in plan.groups if len(group) > 1] == [
        ["['q'][0]['bias']", "['q'][1]['bias']", "['q'][2]['bias']"],
        ["['q'][0]['kernel']", "['q'][1]['kernel']", "['q'][2]['kernel']"],
    ]
    assert list(spec_of(q_bias_array.sharding, q_bias_array.ndim)) == [None, "model"]
    metadata = {str(p) for p in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))}
    assert {"P(None, 'model')", "P(None, None, 'model')"} <= metadata
    for path, sharding in before.items():  # the annotated (q) params; nnx.jit places the others
        if path[0] == jax.tree_util.DictKey("q"):
            assert after[path].sharding.is_equivalent_to(sharding, after[path].ndim), path


def test_a_leaf_whose_shards_fit_no_block_says_so_in_the_report():
    """4096 x 16 tiles globally, but its 4096 x 4 shards fit no tile, and runs of 4 would cost more in
    scales than they save: float32, and the report says why. 64 x 96 in 64 x 24 shards runs along them."""
    mesh = jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)
    narrow = jax.device_put(jnp.ones((4096, 16)), NamedSharding(mesh, P(None, "y")))
    w = jax.device_put(jnp.ones((64, 96)), NamedSharding(mesh, P(None, "y")))
    state = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit").init({"narrow": narrow, "v": jnp.ones((64, 96)), "w": w})
    report = rmsprop_jax.state_report(state)
    assert [leaf.eight_bit for leaf in report.leaves] == ["no: no block fits its shards (4096x4)", "yes", "yes"]
    assert [leaf.storage for leaf in report.leaves] == ["float32", "8bit tiles", "8bit runs of 24"]


def test_a_restore_after_the_mesh_cut_other_8bit_blocks_says_so_and_convert_state_moves_it():
    """A (64, 1000) leaf: runs of 250 on one device, of 125 when its columns are split 8 ways.
    Restoring the sharded run's checkpoint into a one-device target names the block layout, not
    state_dtype; restoring into the checkpoint's own layout and converting works."""
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit")
    mesh = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
    value = jnp.linspace(-1.0, 1.0, 64 * 1000).reshape(64, 1000)
    sharded = {"w": jax.device_put(value, NamedSharding(mesh, P(None, "model")))}
    state = tx.init(sharded)
    assert state.nu["w"].scales.shape == (64, 8)
    single = {"w": jax.device_put(value, jax.devices()[0])}
    target = tx.init(single)
    assert target.nu["w"].scales.shape == (64, 4)
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.save(f"{directory}/ckpt", state)
        with pytest.raises(ValueError, match="8-bit block layout differs") as error:
            checkpoint.restore(f"{directory}/ckpt", target)
        assert "sharding" in str(error.value) and "convert_state" in str(error.value)
        restored = checkpoint.restore(f"{directory}/ckpt", state)
    moved = rmsprop_jax.convert_state(restored, target)
    assert moved.nu["w"].scales.shape == (64, 4)
    np.testing.assert_allclose(
        rmsprop_jax.state_as_float32(moved).nu["w"], rmsprop_jax.state_as_float32(state).nu["w"], rtol=0.15
    )
