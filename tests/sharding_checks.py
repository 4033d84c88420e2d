"""Runs in its own process with 8 simulated CPU devices (see tests/test_sharding.py).

Prints one JSON object: for each mesh axis type, layout and optimizer, whether every
state leaf carries its param's sharding (eager and jitted init), which collectives the
compiled update contains, and the largest difference from the single-device run.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before JAX starts; importing this module (doctest collection) changes nothing
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    os.environ.setdefault("KERAS_BACKEND", "jax")

import json
import re
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import rmsprop_jax
from rmsprop_jax import presets
from rmsprop_jax._storage_8bit import Quantized

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")
SCHEDULE = optax.linear_schedule(1e-2, 1e-3, 10)
OPTIMIZERS = {
    "plain": lambda: rmsprop_jax.rmsprop(1e-2),
    "momentum": lambda: rmsprop_jax.rmsprop(1e-2, momentum=0.9),
    "centered+momentum": lambda: rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9),
    "nesterov+bias_correction": lambda: rmsprop_jax.rmsprop(1e-2, momentum=0.9, nesterov=True, bias_correction=True),
    "schedule+decoupled_wd": lambda: rmsprop_jax.rmsprop(SCHEDULE, weight_decay=1e-2, decoupled_weight_decay=True),
    "bfloat16 state": lambda: rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="bfloat16"),
    "initial_scale=1": lambda: rmsprop_jax.rmsprop(1e-2, initial_scale=1.0),
    "presets.pytorch": lambda: presets.pytorch(lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-3),
    "presets.keras": lambda: presets.keras(learning_rate=1e-2, momentum=0.9, weight_decay=1e-3),
    "presets.tensorflow_v1": lambda: presets.tensorflow_v1(1e-2, momentum=0.9),
    "presets.timm": lambda: presets.timm(lr=1e-2, momentum=0.9, weight_decay=1e-3, decoupled_decay=True),
    "presets.optax": lambda: presets.optax(1e-2, momentum=0.9, centered=True),
}
EIGHT_BIT = {  # params large enough to be quantized (tests/test_storage.py has the rule); nu in both forms, mu, buffer
    "8bit centered+momentum": lambda: rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, state_dtype="8bit"),
    "8bit presets.pytorch": lambda: presets.pytorch(lr=1e-2, momentum=0.9, weight_decay=1e-3, state_dtype="8bit"),
}
LAYOUTS_8BIT = {  # (w (128, 256), b (4096,), n (256, 16)): n's shards are narrower than a tile under TP and 2-D
    "data-parallel": (P(), P(), P()),
    "fsdp": (P("data", None), P("data"), P("data", None)),
    "tensor-parallel": (P(None, "model"), P("model"), P(None, "model")),
    "2d": (P("data", "model"), P("model"), P("data", "model")),
}
NARROW = ("tensor-parallel", "2d")  # the layouts whose n shards are narrower than a 16 x 16 tile
LAYOUTS = {  # (w spec, b spec): data-parallel (replicated), FSDP, tensor-parallel
    "data-parallel": (P(), P()),
    "fsdp": (P("data", None), P("data")),
    "tensor-parallel": (P(None, "model"), P("model")),
    "2d": (P("data", "model"), P("model")),
}


def params_on(mesh: jax.sharding.Mesh | None, layout: str) -> dict[str, jax.Array]:
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((8, 16)), jnp.float32), "b": jnp.asarray(rng.standard_normal(16))}
    if mesh is None:
        return params
    w_spec, b_spec = LAYOUTS[layout]
    return {
        "w": jax.device_put(params["w"], NamedSharding(mesh, w_spec)),
        "b": jax.device_put(params["b"], NamedSharding(mesh, b_spec)),
    }


def params_8bit_on(mesh: jax.sharding.Mesh | None, layout: str) -> dict[str, jax.Array]:
    rng = np.random.default_rng(1)
    shapes = {"w": (128, 256), "b": (4096,), "n": (256, 16)}
    params = {name: jnp.asarray(rng.standard_normal(shape), jnp.float32) for name, shape in shapes.items()}
    if mesh is None:
        return params
    specs = dict(zip(shapes, LAYOUTS_8BIT[layout], strict=True))
    return {name: jax.device_put(p, NamedSharding(mesh, specs[name])) for name, p in params.items()}


def grad_fn(params: dict[str, jax.Array], step: jax.Array) -> dict[str, jax.Array]:
    return jax.tree.map(lambda p: jnp.sin(3.0 * p + step) * (1.0 + p * p), params)


def _spec(sharding: NamedSharding, ndim: int) -> tuple:
    spec = tuple(sharding.spec)
    return spec + (None,) * (ndim - len(spec))


def state_matches(state: object, params: dict[str, jax.Array], skip: frozenset[str] = frozenset()) -> bool:
    ok = True
    for field in ("nu", "mu", "trace"):
        tree = optax.tree_utils.tree_get(state, field)
        if tree is None:
            continue
        for name, leaf in tree.items():
            if name in skip:
                continue
            param = params[name]
            if isinstance(leaf, Quantized):  # codes shaped like the param; scales blocked along its axes
                scale = leaf.scale if isinstance(leaf.scale, jax.sharding.Sharding) else leaf.scale.sharding
                ok &= _spec(scale, param.ndim) == _spec(param.sharding, param.ndim)
                leaf = leaf.codes
            sharding = leaf if isinstance(leaf, jax.sharding.Sharding) else leaf.sharding
            if isinstance(sharding.mesh, jax.sharding.AbstractMesh):  # from eval_shape: compare layouts
                ok &= sharding.mesh.shape == param.sharding.mesh.shape and _spec(sharding, param.ndim) == _spec(
                    param.sharding, param.ndim
                )
            else:
                ok &= sharding.is_equivalent_to(param.sharding, param.ndim)
    return bool(ok)


def run_steps(
    tx: optax.GradientTransformation, params: dict[str, jax.Array], steps: int = 5, state: object = None
) -> tuple[dict, object]:
    @jax.jit
    def step(params: dict, state: object, i: jax.Array) -> tuple:
        updates, state = tx.update(grad_fn(params, i), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params) if state is None else state
    for i in range(steps):
        params, state = step(params, state, jnp.float32(i))
    return params, state


def checkpoints() -> list[dict]:
    """Save a sharded run at step 4, restore it sharded, continue to step 9: equal to uninterrupted?"""
    from rmsprop_jax import checkpoint

    out = []
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
        for layout, state_dtype in (("fsdp", None), ("2d", None), ("fsdp", "8bit"), ("2d", "8bit")):
            tx = rmsprop_jax.rmsprop(
                optax.cosine_decay_schedule(1e-2, 10), momentum=0.9, centered=True, state_dtype=state_dtype
            )
            make_params = params_on if state_dtype is None else params_8bit_on

            @jax.jit
            def step(params: dict, state: object, i: jax.Array, tx: optax.GradientTransformation = tx) -> tuple:
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
                shardings_kept = all(
                    a.sharding.is_equivalent_to(b.sharding, a.ndim)
                    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True)
                )
                resumed = (restored["params"], restored["opt_state"])
                for i in range(4, 9):
                    resumed = step(*resumed, jnp.float32(i))
                identical = all(
                    np.array_equal(np.asarray(a), np.asarray(b))
                    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full), strict=True)
                )
            out.append(
                {
                    "axis_type": str(axis_type),
                    "layout": layout,
                    "state_dtype": str(state_dtype),
                    "shardings_kept": shardings_kept,
                    "bit_identical": identical,
                }
            )
    return out


def _sharded_model(make: Callable[[], Any]) -> Any:
    """A Flax NNX model built under ``nnx.jit`` with its ``with_partitioning`` shardings applied (inside a mesh)."""
    from flax import nnx

    @nnx.jit
    def create() -> Any:
        model = make()
        state = nnx.state(model)
        nnx.update(model, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
        return model

    return create()


def nnx_partitioning() -> dict[str, bool]:
    """A Flax NNX model sharded with ``nnx.with_partitioning``: does ``nnx.Optimizer``'s state follow?"""
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            init = nnx.initializers.lecun_normal()
            self.up = nnx.Linear(16, 32, kernel_init=nnx.with_partitioning(init, ("data", "model")), rngs=rngs)
            self.down = nnx.Linear(32, 16, kernel_init=nnx.with_partitioning(init, ("model", "data")), rngs=rngs)

        def __call__(self, x: jax.Array) -> jax.Array:
            return self.down(nnx.relu(self.up(x)))

    def follows(optimizer: nnx.Optimizer, model: MLP) -> bool:
        params = nnx.state(model, nnx.Param)
        state = nnx.state(optimizer, nnx.OptState)
        ok = True
        for field in ("nu", "trace"):
            moments = state["opt_state"][field]
            for layer in ("up", "down"):
                kernel = params[layer]["kernel"][...]
                ok &= moments[layer]["kernel"][...].sharding.is_equivalent_to(kernel.sharding, kernel.ndim)
                ok &= len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
        return bool(ok)

    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    out = {}
    with jax.set_mesh(mesh):
        model = _sharded_model(lambda: MLP(nnx.Rngs(0)))
        out["eager_optimizer"] = follows(
            nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-3, momentum=0.9), wrt=nnx.Param), model
        )

        @nnx.jit
        def create_optimizer(model: MLP) -> nnx.Optimizer:
            return nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-3, momentum=0.9), wrt=nnx.Param)

        optimizer = create_optimizer(model)
        out["jitted_optimizer"] = follows(optimizer, model)

        @nnx.jit
        def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array) -> None:
            grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
            optimizer.update(model, grads)

        train_step(model, optimizer, jnp.ones((8, 16)))
        out["after_a_step"] = follows(optimizer, model)
    return out


PACKED_LAYOUTS = {  # (kernel spec, bias spec) for 3 kernels (8, 16) and 3 biases (16,); q-biases P("model") always
    "data-parallel": (P(), P()),
    "fsdp": (P("data", None), P("data")),
    "tensor-parallel": (P(None, "model"), P("model")),
    "2d": (P("data", "model"), P("model")),
}
PACKED_OPTIMIZERS = {
    "centered+momentum": lambda: rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, pack_small_leaves=True),
    "presets.pytorch": lambda: presets.pytorch(lr=1e-2, momentum=0.9, weight_decay=1e-3, pack_small_leaves=True),
}


def packed_params_on(mesh: jax.sharding.Mesh | None, layout: str) -> dict[str, jax.Array]:
    """Several same-shape small leaves per layout: kernels, biases, and a q-bias P('model') beside an out-bias P()."""
    rng = np.random.default_rng(2)
    kernel, bias = PACKED_LAYOUTS[layout]
    specs = {f"k{i}": kernel for i in range(3)} | {f"b{i}": bias for i in range(3)}
    specs |= {f"q_bias{i}": P("model") for i in range(2)} | {f"out_bias{i}": P() for i in range(2)}
    params = {
        name: jnp.asarray(rng.standard_normal((8, 16) if name.startswith("k") else (16,)), jnp.float32)
        for name in specs
    }
    if mesh is None:
        return params
    return {name: jax.device_put(p, NamedSharding(mesh, specs[name])) for name, p in params.items()}


def _group_specs_follow(state: object, params: dict[str, jax.Array]) -> bool:
    """Every stacked group's sharding is ``P(None, *its members' spec)``; every member has that spec."""
    from rmsprop_jax._packing import Packed

    ok = True
    for field in ("nu", "mu", "trace"):
        packed = getattr(state, field)
        if packed is None:
            continue
        if not isinstance(packed, Packed):
            return False
        plan = packed.plan
        leaves = plan.treedef.flatten_up_to(params)
        for group, array in zip(plan.groups, packed.groups, strict=True):
            member = leaves[group[0]]
            want = _spec(member.sharding, member.ndim)
            ok &= all(_spec(leaves[i].sharding, member.ndim) == want for i in group)
            if len(group) > 1:
                ok &= _spec(array.sharding, array.ndim) == (None, *want)
                ok &= array.shape == (len(group), *member.shape)
    return bool(ok)


def packed_checks() -> list[dict]:
    """pack_small_leaves on 8 devices: groups keep their members' sharding, params keep theirs, no collective."""
    out = []
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
        for layout in PACKED_LAYOUTS:
            for name, make in PACKED_OPTIMIZERS.items():
                tx = make()
                params = packed_params_on(mesh, layout)
                with jax.set_mesh(mesh):
                    state = tx.init(params)
                    plan = rmsprop_jax.packing_plan(state)
                    jitted_state = jax.jit(tx.init)(params)
                    hlo = (
                        jax.jit(lambda p, s, g, tx=tx: tx.update(g, s, p))
                        .lower(params, state, grad_fn(params, jnp.float32(0)))
                        .compile()
                        .as_text()
                    )
                    stepped, stepped_state = run_steps(tx, params, state=state)
                single, _ = run_steps(make(), packed_params_on(None, layout))
                out.append(
                    {
                        "axis_type": str(axis_type),
                        "layout": layout,
                        "optimizer": name,
                        "groups": [sorted(plan.paths[i] for i in group) for group in plan.groups if len(group) > 1],
                        "groups_follow_members": _group_specs_follow(state, params),
                        "jit_init_packs": rmsprop_jax.packing_plan(jitted_state).packs,
                        "jit_groups_follow_members": _group_specs_follow(jitted_state, params)
                        if rmsprop_jax.packing_plan(jitted_state).packs
                        else None,
                        "params_keep_sharding": all(
                            stepped[k].sharding.is_equivalent_to(params[k].sharding, params[k].ndim) for k in params
                        ),
                        "state_keeps_sharding": _group_specs_follow(stepped_state, params),
                        "collectives": sorted({c for c in COLLECTIVES if re.search(rf"\b{c}(-start)?\(", hlo)}),
                        "max_difference": max(
                            float(np.max(np.abs(np.asarray(stepped[k]) - np.asarray(single[k])))) for k in params
                        ),
                    }
                )
    return out


def nnx_packed_partitioning() -> dict[str, object]:
    """nnx.with_partitioning metadata lets a jitted nnx.Optimizer pack on an Auto mesh; groups carry the sharding."""
    from flax import nnx

    class Heads(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            init = nnx.initializers.lecun_normal()
            zeros = nnx.initializers.zeros_init()
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

    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    with jax.set_mesh(mesh):
        model = _sharded_model(lambda: Heads(nnx.Rngs(0)))
        before = {path: leaf.sharding for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model))}

        @nnx.jit
        def create_optimizer(model: Heads) -> nnx.Optimizer:
            tx = rmsprop_jax.rmsprop(1e-3, momentum=0.9, pack_small_leaves=True)
            return nnx.Optimizer(model, tx, wrt=nnx.Param)

        optimizer = create_optimizer(model)

        @nnx.jit
        def train_step(model: Heads, optimizer: nnx.Optimizer, x: jax.Array) -> None:
            grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
            optimizer.update(model, grads)

        train_step(model, optimizer, jnp.ones((8, 16)))
        after = dict(jax.tree_util.tree_leaves_with_path(nnx.state(model)))
        plan = rmsprop_jax.packing_plan(optimizer.opt_state)
        specs = nnx.get_partition_spec(nnx.state(optimizer, nnx.OptState))["opt_state"]
        trace = optimizer.opt_state.trace
        q_bias = next(i for i, g in enumerate(plan.groups) if "['q'][0]['bias']" in [plan.paths[j] for j in g])
        q_bias_array = trace.groups[q_bias]
        q_bias_array = q_bias_array.get_value() if hasattr(q_bias_array, "get_value") else q_bias_array
        return {
            "groups": [sorted(plan.paths[i] for i in group) for group in plan.groups if len(group) > 1],
            "q_bias_group_spec": list(_spec(q_bias_array.sharding, q_bias_array.ndim)),
            "state_metadata_specs": sorted(
                {str(p) for p in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))}
            ),
            # the annotated (q) params; nnx.jit lets XLA place unannotated ones (out), packed or not
            "params_keep_sharding": all(
                after[path].sharding.is_equivalent_to(sharding, after[path].ndim)
                for path, sharding in before.items()
                if path[0] == jax.tree_util.DictKey("q")
            ),
        }


def main() -> None:
    assert len(jax.devices()) == 8
    results = []
    cases = [(name, make, params_on) for name, make in OPTIMIZERS.items()]
    cases += [(name, make, params_8bit_on) for name, make in EIGHT_BIT.items()]
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_type,) * 2)
        for layout in LAYOUTS:
            for name, make, make_params in cases:
                tx = make()
                params = make_params(mesh, layout)
                # Under jax.jit on an Auto mesh init cannot see the shards: n's blocks then follow its global
                # shape and cross its 4-column shards (docs, Numerics: init eagerly, or use an Explicit mesh).
                hidden = axis_type == AxisType.Auto and make_params is params_8bit_on and layout in NARROW
                skip = frozenset({"n"}) if hidden else frozenset()
                with jax.set_mesh(mesh):
                    init_state = tx.init(params)
                    eager = state_matches(init_state, params)
                    jitted_state = jax.jit(tx.init)(params)
                    jitted = state_matches(jitted_state, params, skip)
                    abstract = jax.tree.map(
                        lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=p.sharding), params
                    )
                    if axis_type == AxisType.Explicit:
                        abstract_state = jax.eval_shape(tx.init, abstract)
                    else:  # Auto: abstract values carry no sharding; the compiled init's outputs do
                        abstract_state = jax.jit(tx.init).lower(abstract).compile().output_shardings
                    abstract_ok = state_matches(abstract_state, params, skip)
                    compiled = jax.jit(lambda p, s, g, tx=tx: tx.update(g, s, p)).lower(
                        params, tx.init(params), grad_fn(params, jnp.float32(0))
                    )
                    hlo = compiled.compile().as_text()
                    sharded = run_steps(tx, params, state=init_state)
                # The same initial state on one device (the sharded init chose each leaf's storage).
                on_one_device = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), init_state)
                single = run_steps(make(), make_params(None, layout), state=on_one_device)
                difference = max(
                    float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True)
                )
                bit_identical = all(
                    np.array_equal(np.asarray(a), np.asarray(b))
                    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single), strict=True)
                )
                quantized = sorted(key for key, leaf in init_state.nu.items() if isinstance(leaf, Quantized))
                jit_quantized = sorted(key for key, leaf in jitted_state.nu.items() if isinstance(leaf, Quantized))
                results.append(
                    {
                        "axis_type": str(axis_type),
                        "layout": layout,
                        "optimizer": name,
                        "eager_init_keeps_sharding": eager,
                        "jit_init_keeps_sharding": jitted,
                        "abstract_init_keeps_sharding": abstract_ok,
                        "collectives": sorted({c for c in COLLECTIVES if re.search(rf"\b{c}(-start)?\(", hlo)}),
                        "max_difference": difference,
                        "bit_identical": bit_identical,
                        "quantized": quantized,
                        "jit_quantized": jit_quantized,
                    }
                )
    # The check can fail: global-norm clipping needs its one reduction.
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    params = params_on(mesh, "fsdp")
    clipped = optax.chain(optax.clip_by_global_norm(1.0), rmsprop_jax.rmsprop(1e-2))
    with jax.set_mesh(mesh):
        hlo = (
            jax.jit(lambda p, s, g: clipped.update(g, s, p))
            .lower(params, clipped.init(params), params)
            .compile()
            .as_text()
        )
    control = sorted({c for c in COLLECTIVES if re.search(rf"\b{c}(-start)?\(", hlo)})
    print(
        json.dumps(
            {
                "results": results,
                "clip_by_global_norm_collectives": control,
                "checkpoint": checkpoints(),
                "nnx": nnx_partitioning(),
                "packed": packed_checks(),
                "nnx_packed": nnx_packed_partitioning(),
            }
        )
    )


if __name__ == "__main__":
    main()
