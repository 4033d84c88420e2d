"""README's code runs as written, and its figures are the results files'."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
from helpers import ROOT, load_script

README = ROOT / "README.md"


def _python_block_after(marker: str) -> str:
    """The first ```python block after ``marker`` in README."""
    section = README.read_text().split(marker, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run(code: str) -> tuple[dict, str]:
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)
    return namespace, printed.getvalue()


def test_readme_training_step_runs():
    code = _python_block_after("## A jit-compiled training step")
    assert len(code.splitlines()) <= 25
    namespace, _ = _run(code)
    assert np.isfinite(float(namespace["loss"]))
    assert namespace["opt_state"][1].trace is not None  # rmsprop_jax's state inside the chain


def test_readme_quickstart_has_the_two_commands_ci_runs():
    text = README.read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quickstart, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci


def test_readme_nan_guard_snippet_runs_and_prints_what_it_says():
    code = _python_block_after("- **What is not**")
    namespace, printed = _run(code)
    claimed = code.split("# ", 1)[1].strip() if "print(" in code else None
    assert printed.strip() == claimed
    assert np.all(np.isfinite(namespace["state"].inner_state.nu["w"]))


def test_readme_checkpoint_manager_snippet_restores_the_latest_step():
    namespace, _ = _run(_python_block_after("For a run's step-numbered checkpoints"))
    assert namespace["manager"].all_steps() == [3, 4, 5]
    np.testing.assert_array_equal(namespace["restored"]["params"]["w"], namespace["params"]["w"])


def test_readme_demo_figures_are_the_results_file():
    demo_accuracy = load_script("benchmarks/demo_accuracy.py")
    results = json.loads(demo_accuracy.RESULTS.read_text())
    text = README.read_text()
    assert demo_accuracy.markdown(results) in text
    low, high = demo_accuracy.accuracy_range(results, "rmsprop_jax.rmsprop")
    seconds = [run["train_seconds"] for run in next(iter(results["runs"].values())).values()]
    quickstart = " ".join(text.split("## Quickstart", 1)[1].split("\n## ", 1)[0].split())
    assert f"test accuracy {low:.3f}-{high:.3f} over seeds 0-2" in quickstart
    assert f"{min(seconds):.1f}-{max(seconds):.1f} s of training" in quickstart


def test_readme_8bit_snippet_prints_what_it_says():
    code = _python_block_after("## 8-bit state")
    _, printed = _run(code)
    claimed = [line.split("# ", 1)[1].split(":")[0] for line in code.splitlines() if line.startswith("print(")]
    assert printed.strip().splitlines() == claimed


def test_readme_8bit_demo_table_is_the_results_files():
    demo_8bit = load_script("benchmarks/demo_8bit.py")
    results = json.loads(demo_8bit.RESULTS.read_text())
    assert demo_8bit.markdown(results) in README.read_text()
    assert results["seeds"] == [0, 1, 2] and set(results["runs"]) == {"plain", "momentum", "centered"}


def test_readme_packing_snippet_prints_what_it_says():
    code = _python_block_after("## Many small leaves")
    _, printed = _run(code)
    comments = [line[2:] for line in code.splitlines() if line.startswith("# ")]
    claimed_plan = [comment.removesuffix(", ...") for comment in comments]
    lines = printed.strip().splitlines()
    assert lines[0].startswith(claimed_plan[0]) and lines[1] == claimed_plan[1]
    shape_claim = next(line.split("# ", 1)[1] for line in code.splitlines() if line.startswith("print(state"))
    assert lines[2] == shape_claim


def test_readme_packing_table_is_the_results_file():
    packing = load_script("benchmarks/packing.py")
    results = json.loads(packing.RESULTS.read_text())
    assert packing.markdown(results) in README.read_text()
