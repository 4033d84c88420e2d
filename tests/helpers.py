"""Helpers the tests share: a hard gradient sequence, a script loader, and imports that may not skip in CI."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys
import types

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


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
