"""The public surface: what ``import rmsprop_jax`` gives, and nothing more."""

from __future__ import annotations

import pickle
import pydoc
import subprocess
import sys

import jax.numpy as jnp

import rmsprop_jax

PUBLIC_NAMES = [
    "LeafReport",
    "PackingPlan",
    "RmsPropState",
    "StateReport",
    "__version__",
    "convert_state",
    "packing_plan",
    "rmsprop",
    "scale_by_rms",
    "state_as_float32",
    "state_report",
]
PUBLIC_SUBMODULES = ("checkpoint", "clipping", "demo", "presets")


def test_public_surface_is_pinned():
    assert sorted(rmsprop_jax.__all__) == PUBLIC_NAMES
    assert rmsprop_jax.SUBMODULES == PUBLIC_SUBMODULES
    assert sorted(rmsprop_jax.presets.__all__) == [
        "CONVENTIONS",
        "Convention",
        "OPTIMIZERS",
        "RL_RECIPES",
        "Recipe",
        "dqn2015",
        "graves2013",
        "hinton2012",
        "keras",
        "keras_state",
        "optax",
        "pytorch",
        "pytorch_state",
        "tensorflow_v1",
        "timm",
    ]
    assert rmsprop_jax.checkpoint.__all__ == ["mismatches", "restore", "save"]
    assert rmsprop_jax.clipping.__all__ == ["clip_by_leaf_norm"]


def _fresh_python(code: str) -> str:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_submodules_are_attributes_after_a_plain_import_and_heavy_ones_load_lazily():
    out = _fresh_python(
        "import sys, rmsprop_jax as r\n"
        "print(sorted(m for m in ('flax', 'matplotlib', 'orbax', 'rmsprop_jax.demo') if m in sys.modules))\n"
        "r.presets.pytorch(lr=0.01); r.checkpoint.save; r.clipping.clip_by_leaf_norm(1.0)\n"
        "print(r.demo.__name__, 'flax' in sys.modules)\n"
        "print('demo' in dir(r))\n"
    )
    assert out.splitlines() == ["[]", "rmsprop_jax.demo False", "True"]


def test_help_on_the_submodules_renders():
    for name in PUBLIC_SUBMODULES:
        text = pydoc.render_doc(getattr(rmsprop_jax, name), renderer=pydoc.plaintext)
        assert f"rmsprop_jax.{name}" in text


def test_unknown_attribute_is_an_attribute_error():
    try:
        rmsprop_jax.not_a_module  # noqa: B018
    except AttributeError as error:
        assert "not_a_module" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_public_classes_report_the_public_path():
    state = rmsprop_jax.rmsprop(0.1, momentum=0.9).init({"w": jnp.ones(2)})
    assert type(state).__module__ == "rmsprop_jax"
    assert repr(state).startswith("RmsPropState(")
    assert b"rmsprop_jax" in pickle.dumps(state) and b"rmsprop_jax._state" not in pickle.dumps(state)
    assert pickle.loads(pickle.dumps(state)).nu["w"].shape == (2,)


def test_functions_are_the_public_names():
    assert rmsprop_jax.presets.optax is rmsprop_jax.rmsprop
    for name in PUBLIC_NAMES:
        if name != "__version__":
            assert getattr(rmsprop_jax, name).__name__ == name
