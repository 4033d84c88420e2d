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
    checkpoint_resumes,
    collectives,
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
from rmsprop_jax import Nibbles, Quantized, checkpoint
from rmsprop_jax import _codec_8bit as codec
from rmsprop_jax import _plan as plans

AXIS_TYPES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}
CASES = {name: (make, params_on) for name, make in OPTIMIZERS.items()}
CASES |= {name: (make, params_8bit_on) for name, make in EIGHT_BIT.items()}


def mesh_of(axis_type: AxisType) -> jax.sharding.Mesh:
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)


def _jitted_and_abstract_init(tx: optax.GradientTransformation, params: dict, axis_type: AxisType) -> tuple:
    """The jitted init's state, and the abstract one: eval_shape's on an Explicit mesh; on an Auto mesh,
    where abstract values carry no sharding, the output shardings of the init compiled from abstract
    values (the executable that also gives the jitted state: one compilation)."""
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=p.sharding), params)
    if axis_type == AxisType.Explicit:
        return jax.jit(tx.init)(params), jax.eval_shape(tx.init, abstract)
    compiled = jax.jit(tx.init).lower(abstract).compile()
    return compiled(params), compiled.output_shardings


_ONE_DEVICE_RUNS: dict[str, tuple[object, object]] = {}


def _one_device_run(name: str, make: object, params: dict, state: object, eight_bit: bool) -> object:
    """``run_steps`` on one device, from ``params`` and ``state``; run once per optimizer: every mesh
    layout's one-device params and initial state are the same (checked here, bit for bit)."""
    inputs = (params, state)
    cached = _ONE_DEVICE_RUNS.get(name)
    if cached is not None and jax.tree.structure(cached[0]) == jax.tree.structure(inputs):
        same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), cached[0], inputs)
        if jax.tree.all(same):
            return cached[1]
    result = run_steps(make(), params, state=state, grads_on_host=eight_bit)  # pyright: ignore[reportCallIssue]
    _ONE_DEVICE_RUNS[name] = (inputs, result)
    return result


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis", AXIS_TYPES)
def test_state_follows_the_params_update_has_no_collective_and_equals_one_device(axis, layout, name):
    make, make_params = CASES[name]
    axis_type, mesh, tx = AXIS_TYPES[axis], mesh_of(AXIS_TYPES[axis]), make()
    params = make_params(mesh, layout)
    eight_bit = make_params is params_8bit_on
    with jax.set_mesh(mesh):
        state = tx.init(params)
        assert state_matches(state, params), "eager init"
        jitted_state, abstract_state = _jitted_and_abstract_init(tx, params, axis_type)
        assert state_matches(jitted_state, params), "jitted init"
        assert state_matches(abstract_state, params), "abstract init"
        texts: list[str] = []  # the step's compiled HLO, which runs the steps below
        sharded = run_steps(tx, params, state=state, grads_on_host=eight_bit, on_compiled=texts.append)
        assert collectives(texts[0]) == []
    single_state = make().init(make_params(None, layout))  # one device's own init: the same layouts
    assert jax.tree.map(lambda x: (x.shape, x.dtype), single_state) == jax.tree.map(lambda x: (x.shape, x.dtype), state)
    on_one_device = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), state)  # the same storages
    single = _one_device_run(name, make, make_params(None, layout), on_one_device, eight_bit)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True):
        if eight_bit:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=0, atol=1e-6)
    if eight_bit:
        # every leaf is quantized with one device's layout, on every mesh, eagerly and under jit
        four_bit = "4bit" in name  # nu in 4 bits where an axis pairs (n along its rows; q and r: no even shard)
        for quantized_state in (state, jitted_state):
            kept = {k: type(leaf).__name__ for k, leaf in quantized_state.nu.items()}
            assert sorted(k for k, kind in kept.items() if kind in ("Quantized", "Nibbles")) == list("benqrw")
            assert sorted(k for k, kind in kept.items() if kind == "Nibbles") == (list("benw") if four_bit else [])
            signed = quantized_state.mu or {}  # 8 bits in either kind
            assert all(isinstance(leaf, Quantized) for leaf in signed.values())
        layouts = {leaf.path: str(leaf.storages.nu.layout) for leaf in plans.read(state).leaves}
        # r's runs of 125 fit its columns split 8 ways, q's padded rows are never split, e's boxes fit 16-wide shards
        assert layouts["['r']"] == "runs of 125" and layouts["['e']"] == "boxes of 25x8"
        assert layouts["['n']"] == "boxes of 32x2"
        if four_bit:  # n's codes: its rows halved (pairs within each shard of rows), a unit axis saying so
            n_codes = state.nu["n"].nibbles
            assert n_codes.shape == (128, 16, 1)
            n_spec = spec_of(make_params(mesh, layout)["n"].sharding, 2)
            assert spec_of(n_codes.sharding, 3) == (*n_spec, None)


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
    with jax.set_mesh(mesh):
        checkpoint_resumes(tx, make_params(mesh, layout), saved_at=4, steps=9)


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


class _Classifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:  # 200 classes: 4-bit codes paired along the 64 inputs
        init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("data", "model"))
        self.head = nnx.Linear(64, 200, kernel_init=init, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(x)


def test_nnx_4bit_codes_paired_along_rows_carry_the_kernels_partitioning():
    """The codes' metadata names the kernel's axes, then None for the unit axis; their arrays and the
    half scales are placed as that metadata says, after init under nnx.jit and after a step."""
    with jax.set_mesh(mesh_of(AxisType.Auto)):
        model = sharded_model(lambda: _Classifier(nnx.Rngs(0)))

        @nnx.jit
        def create_optimizer(model: _Classifier) -> nnx.Optimizer:
            return nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-3, state_dtype="4bit"), wrt=nnx.Param)

        @nnx.jit
        def train_step(model: _Classifier, optimizer: nnx.Optimizer, x: jax.Array) -> None:
            optimizer.update(model, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model))

        optimizer = create_optimizer(model)
        for _ in range(2):
            nu = optimizer.opt_state.nu["head"]["kernel"]
            assert isinstance(nu, Nibbles) and nu.nibbles[...].shape == (32, 200, 1)
            assert nu.nibbles.get_metadata()["out_sharding"] == ("data", "model", None)
            assert nu.half_scales.get_metadata()["out_sharding"] == ("data", "model", None)
            for variable in nu:
                spec = P(*variable.get_metadata()["out_sharding"])
                assert variable[...].sharding.is_equivalent_to(NamedSharding(variable[...].sharding.mesh, spec), 3)
            train_step(model, optimizer, jnp.ones((8, 64)))


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
        texts: list[str] = []
        stepped, stepped_state = run_steps(tx, params, state=state, on_compiled=texts.append)
        assert collectives(texts[0]) == []
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


def test_narrow_shards_keep_one_devices_8bit_layout_and_the_report_says_which():
    """4096 x 16 split 8 ways (2 columns per shard) and 64 x 96 split 4 ways (24 columns): the blocks are
    chosen so that every even sharding up to 8 ways holds whole ones, so both keep one device's layout."""
    mesh = jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)
    narrow = jax.device_put(jnp.ones((4096, 16)), NamedSharding(mesh, P(None, ("x", "y"))))
    w = jax.device_put(jnp.ones((64, 96)), NamedSharding(mesh, P(None, "y")))
    params = {"narrow": narrow, "v": jnp.ones((64, 96)), "w": w}
    state = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit").init(params)
    report = rmsprop_jax.state_report(state)
    assert [leaf.eight_bit for leaf in report.leaves] == ["yes", "yes", "yes"]
    assert [leaf.storage for leaf in report.leaves] == [
        "8bit boxes of 128x2",
        "8bit boxes of 8x12",
        "8bit boxes of 8x12",
    ]
    single = rmsprop_jax.rmsprop(1e-3, state_dtype="8bit").init(
        jax.tree.map(lambda p: jnp.asarray(np.asarray(p)), params)
    )
    assert jax.tree.map(jnp.shape, single) == jax.tree.map(jnp.shape, state)


def test_a_restore_of_other_8bit_blocks_says_so_and_convert_state_moves_it():
    """A (64, 1000) leaf: boxes of 2 x 125 today; runs of 250, as the rule before issue 28 cut it, in a
    checkpoint. Restoring that checkpoint into today's target names the block layout, not state_dtype;
    restoring into the checkpoint's own layout and converting works, on a mesh too."""
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit")
    mesh = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
    value = jnp.linspace(-1.0, 1.0, 64 * 1000).reshape(64, 1000)
    sharded = {"w": jax.device_put(value, NamedSharding(mesh, P(None, "model")))}
    target = tx.init(sharded)
    assert target.nu["w"].scales.shape == (32, 8)
    earlier = codec.Layout("runs", 1, 250)
    trained = run_steps(tx, {"w": value}, state=tx.init({"w": value}))[1]
    floats = rmsprop_jax.state_as_float32(trained)
    state = trained._replace(
        nu={"w": codec.encode(floats.nu["w"], earlier, codec.UNSIGNED, jnp.uint32(1))},
        trace={"w": codec.encode(floats.trace["w"], earlier, codec.SIGNED, jnp.uint32(2))},
    )
    assert state.nu["w"].scales.shape == (64, 4)
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.save(f"{directory}/ckpt", state)
        with pytest.raises(ValueError, match="8-bit block layout differs") as error:
            checkpoint.restore(f"{directory}/ckpt", target)
        assert "convert_state" in str(error.value)
        restored = checkpoint.restore(f"{directory}/ckpt", state)
    moved = rmsprop_jax.convert_state(restored, target)
    assert moved.nu["w"].scales.shape == (32, 8)
    np.testing.assert_allclose(
        rmsprop_jax.state_as_float32(moved).nu["w"], rmsprop_jax.state_as_float32(state).nu["w"], rtol=0.15
    )
