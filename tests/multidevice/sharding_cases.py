"""What the 8-device tests share: the params on each layout, the optimizers, and the checks' helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import rmsprop_jax
from rmsprop_jax import Nibbles, Quantized, presets

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
    "4bit centered+momentum": lambda: rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, state_dtype="4bit"),
}
LAYOUTS_8BIT = {  # w (128, 256), b (4096,), n (256, 16): n's shards are narrower than a tile under TP and 2-D;
    # r (40, 1000) and q (24, 509): shapes no tile or run of 256 divides (runs of 125; runs of 256 and a padded 253);
    # e (100, 64), the embedding: 64 columns split 4 ways are 16 wide (boxes of 25 x 8 on every mesh)
    "data-parallel": (P(), P(), P(), P(), P(), P()),
    "fsdp": (P("data", None), P("data"), P("data", None), P("data", None), P("data", None), P("data", None)),
    "tensor-parallel": (P(None, "model"), P("model"), P(None, "model"), P(None, "model"), P(), P(None, "model")),
    "2d": (P("data", "model"), P("model"), P("data", "model"), P("data", "model"), P("data", None), P("data", "model")),
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
    shapes = {"w": (128, 256), "b": (4096,), "n": (256, 16), "r": (40, 1000), "q": (24, 509), "e": (100, 64)}
    params = {name: jnp.asarray(rng.standard_normal(shape), jnp.float32) for name, shape in shapes.items()}
    if mesh is None:
        return params
    specs = dict(zip(shapes, LAYOUTS_8BIT[layout], strict=True))
    return {name: jax.device_put(p, NamedSharding(mesh, specs[name])) for name, p in params.items()}


def grad_fn(params: dict[str, jax.Array], step: jax.Array) -> dict[str, jax.Array]:
    return jax.tree.map(lambda p: jnp.sin(3.0 * p + step) * (1.0 + p * p), params)


def spec_of(sharding: NamedSharding, ndim: int) -> tuple:
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
                scale = leaf.scales if isinstance(leaf.scales, jax.sharding.Sharding) else leaf.scales.sharding
                ok &= spec_of(scale, param.ndim) == spec_of(param.sharding, param.ndim)
                leaf = leaf.codes
            elif isinstance(leaf, Nibbles):  # the param's axes (one halved, unit axes after); half scales blocked
                half, codes = leaf.half_scales, leaf.nibbles
                halves = spec_of(half if isinstance(half, jax.sharding.Sharding) else half.sharding, param.ndim + 1)
                ok &= halves[-1] is None and halves[:-1] == spec_of(param.sharding, param.ndim)
                codes = codes if isinstance(codes, jax.sharding.Sharding) else codes.sharding
                spec = spec_of(codes, param.ndim + 2)  # at most one unit axis per param axis after the paired one
                ok &= spec[: param.ndim] == spec_of(param.sharding, param.ndim) and set(spec[param.ndim :]) == {None}
                ok &= codes.mesh.shape == param.sharding.mesh.shape
                continue
            sharding = leaf if isinstance(leaf, jax.sharding.Sharding) else leaf.sharding
            if isinstance(sharding.mesh, jax.sharding.AbstractMesh):  # from eval_shape: compare layouts
                ok &= sharding.mesh.shape == param.sharding.mesh.shape and spec_of(sharding, param.ndim) == spec_of(
                    param.sharding, param.ndim
                )
            else:
                ok &= sharding.is_equivalent_to(param.sharding, param.ndim)
    return bool(ok)


def run_steps(
    tx: optax.GradientTransformation,
    params: dict[str, jax.Array],
    steps: int = 5,
    state: object = None,
    grads_on_host: bool = False,
    on_compiled: Callable[[str], None] | None = None,
) -> tuple[dict, object]:
    """``steps`` jitted steps of ``tx`` with :func:`grad_fn`'s gradients, computed inside the step; or, with
    ``grads_on_host``, in NumPy from the params and handed to the step with the params' shardings, so that a
    sharded and a one-device run step from the same gradient bits (XLA computes ``sin`` inside a fusion
    with vector or scalar code, which a partitioned program may choose otherwise: one ulp apart).

    The step is compiled once, at the first step's arguments, and every step runs that executable (a
    later step whose arguments' shardings differ from the first's is an error, not a recompilation);
    ``on_compiled`` is given its optimized HLO text (the collectives check)."""

    def step(params: dict, state: object, i: jax.Array) -> tuple:
        updates, state = tx.update(grad_fn(params, i), state, params)
        return optax.apply_updates(params, updates), state

    def step_with(params: dict, state: object, grads: dict) -> tuple:
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def grads_at(params: dict, i: int) -> dict:
        host = {
            name: (np.sin(3.0 * np.asarray(p) + np.float32(i)) * (1.0 + np.asarray(p) ** 2)).astype(np.float32)
            for name, p in params.items()
        }
        return {name: jax.device_put(host[name], params[name].sharding) for name in params}

    state = tx.init(params) if state is None else state
    compiled = None
    for i in range(steps):
        args = (params, state, grads_at(params, i) if grads_on_host else jnp.float32(i))
        if compiled is None:
            compiled = jax.jit(step_with if grads_on_host else step).lower(*args).compile()
            if on_compiled is not None:
                on_compiled(compiled.as_text())
        params, state = compiled(*args)
    return params, state


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


def group_specs_follow(state: object, params: dict[str, jax.Array]) -> bool:
    """Every stacked group's sharding is ``P(None, *its members' spec)``; every member has that spec."""
    from rmsprop_jax import _plan as plans
    from rmsprop_jax._state import PackedGroups

    ok = True
    for field in ("nu", "mu", "trace"):
        packed = getattr(state, field)
        if packed is None:
            continue
        if not isinstance(packed, PackedGroups):
            return False
        plan = plans.read(state)
        leaves = plan.treedef.flatten_up_to(params)
        for group, array in zip(plan.groups, plans.group_arrays(plan, packed), strict=True):
            member = leaves[group[0]]
            want = spec_of(member.sharding, member.ndim)
            ok &= all(spec_of(leaves[i].sharding, member.ndim) == want for i in group)
            if len(group) > 1:
                ok &= spec_of(array.sharding, array.ndim) == (None, *want)
                ok &= array.shape == (len(group), *member.shape)
    return bool(ok)


def collectives(hlo: str) -> list[str]:
    """The collectives a compiled program's HLO text contains."""
    return sorted({c for c in COLLECTIVES if re.search(rf"\b{c}(-start)?\(", hlo)})


def sharded_model(make: Callable[[], Any]) -> Any:
    """A Flax NNX model built under ``nnx.jit`` with its ``with_partitioning`` shardings applied (inside a mesh)."""
    from flax import nnx

    @nnx.jit
    def create() -> Any:
        model = make()
        state = nnx.state(model)
        nnx.update(model, jax.lax.with_sharding_constraint(state, nnx.get_partition_spec(state)))
        return model

    return create()


def checkpoint_resumes(tx: Any, params: dict[str, jax.Array], saved_at: int, steps: int) -> None:
    """Inside a mesh: ``steps`` jitted steps straight, and ``saved_at`` steps saved by
    :func:`rmsprop_jax.checkpoint.save`, restored into ``tx.init(params)`` (sharded, in the target's
    memory) and resumed; asserts the restored shardings and that both runs end bit for bit equal."""
    import tempfile

    from rmsprop_jax import checkpoint

    @jax.jit
    def step(params: dict, state: object, i: jax.Array) -> tuple:
        updates, state = tx.update(grad_fn(params, i), state, params)
        return optax.apply_updates(params, updates), state

    full = (params, tx.init(params))
    for i in range(steps):
        full = step(*full, jnp.float32(i))
    part = (params, tx.init(params))
    for i in range(saved_at):
        part = step(*part, jnp.float32(i))
    with tempfile.TemporaryDirectory() as directory:
        checkpoint.save(f"{directory}/saved", {"params": part[0], "opt_state": part[1]})
        target = {"params": params, "opt_state": tx.init(params)}
        restored = checkpoint.restore(f"{directory}/saved", target)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim) and a.sharding.memory_kind == b.sharding.memory_kind
    resumed = (restored["params"], restored["opt_state"])
    for i in range(saved_at, steps):
        resumed = step(*resumed, jnp.float32(i))
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(full), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
