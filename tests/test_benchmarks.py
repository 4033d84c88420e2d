"""Smoke test: the benchmark runs at tiny sizes (no timing assertions)."""

from __future__ import annotations

import importlib.util
import math
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"


def test_step_time_benchmark_runs_at_tiny_size():
    spec = importlib.util.spec_from_file_location("step_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.run(leaves=2, size=64, repeats=2)
    assert [r["variant"] for r in rows] == list(module.VARIANTS)
    for row in rows:
        assert all(math.isfinite(v) and v > 0 for k, v in row.items() if k != "variant")
