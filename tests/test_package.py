"""The public surface: what ``import rmsprop_jax`` gives, and nothing more."""

from __future__ import annotations

import pickle
import pydoc
import re
import subprocess
import sys
import types

import jax.numpy as jnp
import pytest
from helpers import ROOT

import rmsprop_jax

PUBLIC_SUBMODULES = ("checkpoint", "clipping", "demo", "presets")
API_PAGE = (ROOT / "docs" / "api.md").read_text()


def _bound_public_names(module: types.ModuleType) -> set[str]:
    """The public objects a module binds: not private, not a module, not from ``__future__``."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", module.__name__) != "__future__"
        and type(value).__name__ != "_Feature"
    }


def test_all_lists_every_public_object_and_only_those():
    bound = _bound_public_names(rmsprop_jax) - {"SUBMODULES", "annotations"}
    assert set(rmsprop_jax.__all__) - {"__version__"} == bound
    bound_modules = {
        name
        for name, value in vars(rmsprop_jax).items()
        if isinstance(value, types.ModuleType) and not name.startswith("_")
    }
    assert set(rmsprop_jax.SUBMODULES) == (bound_modules | {"demo"}) - {"importlib", "types"}  # demo: lazy
    assert rmsprop_jax.SUBMODULES == PUBLIC_SUBMODULES
    assert set(rmsprop_jax.presets.__all__) == _bound_public_names(rmsprop_jax.presets) - {"optax", "annotations"}
    assert rmsprop_jax.checkpoint.__all__ == ["mismatches", "restore", "save"]
    assert rmsprop_jax.clipping.__all__ == ["clip_by_leaf_norm"]


@pytest.mark.parametrize("name", sorted(set(rmsprop_jax.__all__) - {"__version__"}))
def test_every_public_name_is_on_the_api_page(name):
    assert re.search(rf"\.\. auto(class|function|data):: {name}\b", API_PAGE), name


@pytest.mark.parametrize("name", sorted(rmsprop_jax.presets.__all__))
def test_every_preset_name_is_on_the_api_page(name):
    assert re.search(rf"\.\. (auto)?(class|function|data):: {name}\b", API_PAGE), name


def test_a_star_import_of_the_presets_shadows_no_module():
    namespace: dict = {}
    exec("import optax\nfrom rmsprop_jax.presets import *", namespace)
    assert isinstance(namespace["optax"], types.ModuleType)
    assert rmsprop_jax.presets.optax is rmsprop_jax.rmsprop  # still reachable by name


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
    for name in rmsprop_jax.__all__:
        if name != "__version__":
            assert getattr(rmsprop_jax, name).__name__ == name


def _module_imports() -> dict[str, set[str]]:
    """Each package module's top-level imports of other package modules (``from package import module``
    read as the module)."""
    import ast

    root = ROOT / "rmsprop_jax"
    paths = [*root.glob("*.py"), *root.glob("presets/*.py")]
    names = {
        path: ".".join(["rmsprop_jax", *path.relative_to(root).with_suffix("").parts]).removesuffix(".__init__")
        for path in paths
    }
    modules = set(names.values())
    graph: dict[str, set[str]] = {}
    for path, name in names.items():
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rmsprop_jax"):
                subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
                found |= subs or {node.module}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("rmsprop_jax")}
        graph[name] = found & modules - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        for nxt in sorted(graph[name]):
            if nxt in path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif len(path) < len(graph):
                visit(nxt, [*path, nxt])

    for name in graph:
        visit(name, [name])
    return cycles


def test_the_core_imports_in_one_direction_with_no_cycle():
    """Issue 29: no module of the core imports, at load time, a module that imports it back (a package's
    ``__init__`` importing its submodules aside)."""
    graph = _module_imports()
    for package in ("rmsprop_jax", "rmsprop_jax.presets"):
        graph[package] = set()
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) != []  # the check sees one
    assert "rmsprop_jax._plan" not in graph["rmsprop_jax._state"]
    assert "rmsprop_jax._storage_protocol" in graph["rmsprop_jax._leaf_update"]
