"""The per-leaf state policy: ``state_dtype`` as a pytree prefix or a callable of each leaf.

The pattern users ask for (torchao, bitsandbytes' ``GlobalOptimManager``): embeddings and norms in
float32, kernels in 8 bits, on real Flax NNX and linen trees, under ``jax.jit`` and ``nnx.jit``, saved
and restored, converted; each policy leaf steps bit for bit as the same leaf under the uniform
``state_dtype`` the policy chose for it.
"""

from __future__ import annotations

import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx, serialization

import rmsprop_jax
from rmsprop_jax import Quantized, checkpoint, presets

KERNELS_8BIT = {"embed": "float32", "norm": "float32", "blocks": "8bit"}


def by_path(path: str, param: jax.Array) -> str:
    """Embeddings and norms in float32, every other matrix in 8 bits (what the issue's users ask for)."""
    return "float32" if "embed" in path or "norm" in path.lower() or param.ndim < 2 else "8bit"


class _Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.embed = nnx.Embed(512, 64, rngs=rngs)
        self.norm = nnx.LayerNorm(64, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(64, 128, rngs=rngs), nnx.Linear(128, 64, rngs=rngs)])

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.norm(self.embed(tokens))
        for block in self.blocks:
            x = jax.nn.gelu(block(x))
        return x


class _Linen(nn.Module):
    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.LayerNorm()(nn.Embed(512, 64)(tokens))
        return nn.Dense(64)(jax.nn.gelu(nn.Dense(128)(x)))


def _tokens(step: int) -> jax.Array:
    return jax.random.randint(jax.random.key(step), (8, 16), 0, 512)


def _linen_params() -> dict:
    return _Linen().init(jax.random.key(0), _tokens(0))


def _storages(state: object, state_dtype: object = None, params: object = None) -> dict[str, str]:
    report = rmsprop_jax.state_report(state, state_dtype=state_dtype, params=params)
    return {leaf.path: leaf.storage for leaf in report.leaves}


def test_an_nnx_model_keeps_embeddings_and_norms_in_float32_and_kernels_in_8bit_under_nnx_jit():
    model = _Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, rmsprop_jax.rmsprop(1e-3, momentum=0.9, state_dtype=KERNELS_8BIT), wrt=nnx.Param)

    @nnx.jit
    def train_step(model: _Model, optimizer: nnx.Optimizer, tokens: jax.Array) -> jax.Array:
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(tokens) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer, _tokens(step))) for step in range(5)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    storages = _storages(optimizer.opt_state)
    assert storages["['embed']['embedding']"] == "float32"
    assert storages["['norm']['scale']"] == storages["['norm']['bias']"] == "float32"
    assert storages["['blocks'][0]['kernel']"].startswith("8bit")
    assert storages["['blocks'][1]['kernel']"].startswith("8bit")
    assert storages["['blocks'][0]['bias']"] == "float32"  # 128 entries: too small for 8-bit blocks


def test_a_linen_tree_takes_a_callable_of_path_and_param_and_the_report_names_the_rule():
    params = _linen_params()
    state = rmsprop_jax.rmsprop(1e-3, state_dtype=by_path).init(params)
    report = rmsprop_jax.state_report(state, state_dtype=by_path, params=params)
    storages = {leaf.path: leaf.storage for leaf in report.leaves}
    assert storages["['params']['Embed_0']['embedding']"] == "float32"
    assert storages["['params']['LayerNorm_0']['scale']"] == "float32"
    assert storages["['params']['Dense_0']['kernel']"].startswith("8bit")
    assert {leaf.rule for leaf in report.leaves} == {
        "state_dtype(path, param) = float32",
        "state_dtype(path, param) = 8bit",
    }
    assert "chosen by" in str(report)
    with pytest.raises(ValueError, match="needs the params"):
        rmsprop_jax.state_report(state, state_dtype=by_path)


def test_the_report_names_the_prefix_entry_that_chose_each_leaf():
    params = {"embed": jnp.zeros((512, 64)), "blocks": [jnp.zeros((64, 128)), jnp.zeros(128)]}
    policy = {"embed": "bfloat16", "blocks": "8bit"}
    report = rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3, state_dtype=policy).init(params), state_dtype=policy)
    rules = {leaf.path: (leaf.storage, leaf.rule) for leaf in report.leaves}
    assert rules["['embed']"] == ("bfloat16", "state_dtype['embed'] = bfloat16")
    assert rules["['blocks'][0]"] == ("8bit boxes of 8x16", "state_dtype['blocks'] = 8bit")
    assert rules["['blocks'][1]"] == ("float32", "state_dtype['blocks'] = 8bit")  # too small: float32, as always
    assert all(leaf.rule == "" for leaf in rmsprop_jax.state_report(rmsprop_jax.rmsprop(1e-3).init(params)).leaves)


def _run(tx: optax.GradientTransformation, params: dict, steps: int = 6) -> tuple[dict, object]:
    @jax.jit
    def step(params: dict, state: object, i: jax.Array) -> tuple[dict, object]:
        grads = jax.tree.map(lambda p: jnp.sin(3.0 * p + i) * (1.0 + p * p), params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for i in range(steps):
        params, state = step(params, state, jnp.float32(i))
    return params, state


@pytest.mark.parametrize("centered", [False, True])
def test_each_policy_leaf_steps_bit_for_bit_as_under_the_uniform_state_dtype_it_chose(centered):
    rng = np.random.default_rng(0)
    shapes = {"embed": (512, 64), "norm": (64,), "w1": (64, 256), "w2": (256, 64), "b": (256,)}
    params = {name: jnp.asarray(rng.standard_normal(shape), jnp.float32) for name, shape in shapes.items()}
    policy = {"embed": "bfloat16", "norm": None, "w1": "8bit", "w2": "8bit", "b": "float32"}

    def make(state_dtype: object) -> optax.GradientTransformation:
        return rmsprop_jax.rmsprop(1e-2, centered=centered, momentum=0.9, state_dtype=state_dtype)

    mixed = _run(make(policy), params)
    uniform = {value: _run(make(value), params) for value in set(policy.values())}
    for name, value in policy.items():
        expected_params, expected_state = uniform[value]
        np.testing.assert_array_equal(mixed[0][name], expected_params[name], err_msg=name)
        for field in ("nu", "mu", "trace"):
            if getattr(mixed[1], field) is None:
                continue
            for a, b in zip(
                jax.tree.leaves(getattr(mixed[1], field)[name]),
                jax.tree.leaves(getattr(expected_state, field)[name]),
                strict=True,
            ):
                np.testing.assert_array_equal(a, b, err_msg=f"{field} of {name}")
    assert isinstance(mixed[1].nu["w1"], Quantized) and mixed[1].nu["embed"].dtype == jnp.bfloat16


def test_a_prefix_of_one_value_is_that_value_bit_for_bit():
    params = {"w": jnp.linspace(-1, 1, 64 * 128).reshape(64, 128), "b": jnp.ones(128)}
    one = _run(rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype="8bit"), params)
    prefix = _run(rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype={"w": "8bit", "b": "8bit"}), params)
    assert jax.tree.structure(one) == jax.tree.structure(prefix)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(prefix), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_policy_state_saves_and_restores_with_every_serializer_and_resumes_the_same_run(tmp_path):
    params = jax.tree.map(lambda p: p + 0.1, _linen_params())
    tx = rmsprop_jax.rmsprop(1e-2, centered=True, momentum=0.9, state_dtype=by_path)
    full = _run(tx, params, steps=6)
    part = _run(tx, params, steps=3)

    def resume(state: object) -> tuple[dict, object]:
        @jax.jit
        def step(p: dict, s: object, i: jax.Array) -> tuple[dict, object]:
            grads = jax.tree.map(lambda x: jnp.sin(3.0 * x + i) * (1.0 + x * x), p)
            updates, s = tx.update(grads, s, p)
            return optax.apply_updates(p, updates), s

        run = (part[0], state)
        for i in range(3, 6):
            run = step(*run, jnp.float32(i))
        return run

    target = tx.init(params)
    checkpoint.save(tmp_path / "orbax", part[1])
    restored = {
        "orbax": checkpoint.restore(tmp_path / "orbax", target),
        "msgpack": serialization.from_bytes(target, serialization.to_bytes(part[1])),
        "pickle": pickle.loads(pickle.dumps(jax.device_get(part[1]))),
    }
    for name, state in restored.items():
        for a, b in zip(jax.tree.leaves(resume(state)), jax.tree.leaves(full), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_convert_state_moves_a_policy_state_to_float32_and_back():
    params = {"embed": jnp.zeros((512, 64)), "w": jnp.zeros((64, 256))}
    policy = {"embed": "float32", "w": "8bit"}
    tx = rmsprop_jax.rmsprop(1e-2, momentum=0.9, state_dtype=policy)
    _, state = _run(tx, jax.tree.map(lambda p: p + 0.5, params))
    as_float32 = rmsprop_jax.convert_state(state, rmsprop_jax.rmsprop(1e-2, momentum=0.9).init(params))
    assert _storages(as_float32) == {"['embed']": "float32", "['w']": "float32"}
    back = rmsprop_jax.convert_state(as_float32, tx.init(params))
    assert _storages(back) == _storages(state)
    np.testing.assert_array_equal(back.nu["embed"], state.nu["embed"])
    views = rmsprop_jax.state_as_float32(back), rmsprop_jax.state_as_float32(state)
    np.testing.assert_allclose(views[0].nu["w"], views[1].nu["w"], rtol=0.02, atol=1e-6)


def test_presets_pass_a_policy_through_and_name_it_in_their_own_words():
    params = {"embed": jnp.zeros((512, 64)), "w": jnp.zeros((64, 256))}
    state = presets.pytorch(lr=1e-2, momentum=0.9, state_dtype={"embed": "float32", "w": "8bit"}).init(params)
    assert _storages(state) == {"['embed']": "float32", "['w']": "8bit boxes of 8x32"}
    with pytest.raises(ValueError, match=r"Invalid state_dtype\['w'\] value: 'int8'"):
        presets.keras(learning_rate=1e-2, state_dtype={"embed": "float32", "w": "int8"})


def test_inject_hyperparams_takes_a_callable_policy_as_a_static_arg():
    params = {"embed": jnp.zeros((512, 64)), "w": jnp.zeros((64, 256))}
    tx = optax.inject_hyperparams(rmsprop_jax.rmsprop, static_args=("state_dtype",))(
        learning_rate=1e-2, state_dtype=by_path
    )
    _, state = _run(tx, jax.tree.map(lambda p: p + 0.5, params), steps=2)
    assert _storages(state) == {"['embed']": "float32", "['w']": "8bit boxes of 8x32"}


def test_tree_map_params_maps_a_float_prefix_and_refuses_a_callable():
    params = {"embed": jnp.zeros((512, 64)), "w": jnp.zeros((64, 256))}
    floats = rmsprop_jax.rmsprop(1e-2, state_dtype={"embed": "float32", "w": "bfloat16"})
    mapped = optax.tree_map_params(floats, lambda p: p.shape, floats.init(params))
    assert mapped.nu == {"embed": (512, 64), "w": (64, 256)}
    for policy in ({"embed": "float32", "w": "8bit"}, by_path):
        tx = rmsprop_jax.rmsprop(1e-2, state_dtype=policy)
        with pytest.raises(ValueError, match="tree_map_params cannot map"):
            optax.tree_map_params(tx, lambda p: p, tx.init(params))


def test_a_bad_policy_is_refused_naming_the_entry_or_the_leaf():
    params = {"embed": jnp.zeros((512, 64)), "w": jnp.zeros((64, 256))}
    with pytest.raises(ValueError, match=r"Invalid state_dtype\['embed'\] value: 'float8'"):
        rmsprop_jax.rmsprop(1e-2, state_dtype={"embed": "float8", "w": "8bit"})
    with pytest.raises(ValueError, match=r"leaf \['w'\] of the params lies under no entry"):
        rmsprop_jax.rmsprop(1e-2, state_dtype={"embed": "float32"}).init(params)
    with pytest.raises(ValueError, match=r"state_dtype\['embd'\] matches no leaf"):
        rmsprop_jax.rmsprop(1e-2, state_dtype={"embed": "float32", "embd": "8bit", "w": "8bit"}).init(params)
    with pytest.raises(ValueError, match=r"state_dtype\(\"\['w'\]\", param\) value: 'int4'"):
        rmsprop_jax.rmsprop(1e-2, state_dtype=lambda path, p: "int4" if path == "['w']" else None).init(params)
    with pytest.raises(ValueError, match="Invalid bias_correction value: True"):  # a known 8-bit entry: at construction
        rmsprop_jax.rmsprop(1e-2, centered=True, bias_correction=True, state_dtype={"embed": None, "w": "8bit"})
    centered = rmsprop_jax.rmsprop(1e-2, centered=True, bias_correction=True, state_dtype=by_path)
    with pytest.raises(ValueError, match="Invalid bias_correction value: True"):  # a callable's choice: at init
        centered.init(params)
    with pytest.raises(ValueError, match="must be one value, a pytree prefix of values, or a callable"):
        rmsprop_jax.rmsprop(1e-2, state_dtype={})


def test_update_refuses_a_state_another_policy_built_naming_the_rule():
    params = {"embed": jnp.zeros((512, 64)), "w": jnp.zeros((64, 256))}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = rmsprop_jax.rmsprop(1e-2, state_dtype={"embed": "float32", "w": "8bit"})
    other = rmsprop_jax.rmsprop(1e-2, state_dtype={"embed": "bfloat16", "w": "8bit"}).init(params)
    with pytest.raises(ValueError, match=r"leaf \['embed'\] in bfloat16, but this optimizer's state_dtype "):
        tx.update(grads, other, params)
    swapped = rmsprop_jax.rmsprop(1e-2, state_dtype={"embed": "8bit", "w": "float32"})
    with pytest.raises(ValueError, match=r"\(state_dtype\['w'\]\) is 'float32'"):
        swapped.update(grads, tx.init(params), params)
