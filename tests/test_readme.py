"""The README's training-step example runs as written."""

from __future__ import annotations

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_step_runs():
    text = README.read_text()
    section = text.split("## A jit-compiled training step", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.splitlines()) <= 25
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert np.isfinite(float(namespace["loss"]))
    assert namespace["opt_state"][1].trace is not None  # rmsprop_jax's state inside the chain


def test_readme_quickstart_has_the_two_commands_ci_runs():
    text = README.read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quickstart, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci
