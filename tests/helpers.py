"""Helpers the tests share: gradient sequences, running an optimizer for some steps, a script loader,
and imports that may not skip in CI."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pathlib
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def names_used(path: pathlib.Path) -> set[str]:
    """Every module, imported name, name and attribute a Python file mentions (the import rules'
    tests: which modules name a storage kind or a layout)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module.rsplit(".", 1)[-1], *(alias.name for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name.rsplit(".", 1)[-1] for alias in node.names}
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
    return found


def hard_gradients(steps: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """Gradients whose magnitude jumps between 1e-3 and 1e3 and that are exactly
    zero on some entries, with both signs and a drifting mean."""
    rng = np.random.default_rng(seed)
    zero = rng.random(shape) < 0.2
    grads = []
    for t in range(steps):
        scale = 10.0 ** rng.choice([-3, -1, 0, 1, 3])
        g = scale * (rng.standard_normal(shape) + 0.5 * np.sin(t / 7))
        grads.append(np.where(zero, 0.0, g).astype(np.float32))
    return grads


def run_steps(
    tx: optax.GradientTransformation,
    params: Any,
    gradients: Sequence[Any] | tuple[Callable[[Any, Any], Any], Sequence[int]],
    *,
    state: Any = None,
    jit: bool = True,
) -> tuple[Any, Any, list[Any]]:
    """Steps ``tx`` from ``params`` (and ``state``, by default ``tx.init(params)``), applying each update.

    Args:
      tx: The optimizer.
      params: The starting params.
      gradients: The gradient trees, one per step; or ``(grad_fn, steps)``: ``grad_fn(params, i)``
        computes step ``i``'s gradient (inside the jitted step) for each ``i`` in ``steps``, given
        to it as a float32 scalar.
      state: The starting state.
      jit: Whether to jit the step.

    Returns:
      The final params, the final state, and every step's updates.
    """
    state = tx.init(params) if state is None else state
    if isinstance(gradients, tuple) and callable(gradients[0]):
        grad_fn, indices = gradients
        inputs = [np.float32(i) for i in indices]
    else:
        grad_fn, inputs = None, list(gradients)

    def step(params: Any, state: Any, given: Any) -> tuple[Any, Any, Any]:
        grads = given if grad_fn is None else grad_fn(params, given)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    step = jax.jit(step) if jit else step
    every = []
    for given in inputs:
        params, state, updates = step(params, state, given)
        every.append(updates)
    return params, state, every


def scan_steps(tx: optax.GradientTransformation, params: Any, grads: Any) -> tuple[Any, Any, Any]:
    """``tx`` scanned (``jax.lax.scan``, jitted) over a stack of gradients: the final params and state,
    and the stacked updates."""

    @jax.jit
    def run(params: Any, grads: Any) -> tuple[Any, Any, Any]:
        def step(carry: tuple, g: Any) -> tuple:
            p, state = carry
            updates, state = tx.update(g, state, p)
            return (optax.apply_updates(p, updates), state), updates

        (params, state), updates = jax.lax.scan(step, (params, tx.init(params)), grads)
        return params, state, updates

    return run(params, grads)


def load_script(relative_path: str) -> types.ModuleType:
    """Imports a script of the repository (``examples/...``, ``benchmarks/...``) as a module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def in_ci() -> bool:
    """Whether the suite runs in CI (``.ci/run`` runs with ``CI=true``), where nothing may skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def unavailable(reason: str) -> None:
    """Skips locally; fails in CI, where every reference library must be installed and working."""
    if in_ci():
        pytest.fail(f"{reason} (CI runs every test: install the test extras, see .ci/run)", pytrace=False)
    pytest.skip(reason)


def require(module: str) -> types.ModuleType:
    """``pytest.importorskip`` that fails in CI: a missing or broken install is an error there."""
    try:
        return importlib.import_module(module)
    except Exception as error:  # a broken install raises more than ImportError
        unavailable(f"cannot import {module}: {type(error).__name__}: {error}")
        raise  # unreachable: unavailable() raises


def require_keras_on_jax() -> types.ModuleType:
    """Keras 3 on the JAX backend, which the Keras parity tests need."""
    keras = require("keras")
    if keras.backend.backend() != "jax":
        unavailable(f"the Keras tests need KERAS_BACKEND=jax, got {keras.backend.backend()!r}")
    return keras
