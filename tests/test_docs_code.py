"""Every code block of README and of the documentation's pages runs, and says what it does.

Python blocks run in order, one namespace per page (a later block may use an earlier
one's names); a block whose every ``print`` carries a trailing ``# claim`` must print
exactly its claims. ``>>>`` examples run as doctests. Shell blocks are checked against
what they claim: each command's options against its ``--help``, the install lines'
extras and pins against ``pyproject.toml``, and the Quickstart against ``.ci/run``.
"""

from __future__ import annotations

import contextlib
import doctest
import functools
import io
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tomllib
from helpers import ROOT, require

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL_LIBRARIES = ("torch", "keras", "tensorflow", "timm")


def _blocks(path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), re.S | re.M)


def _claims(code: str) -> list[str] | None:
    """The printed lines a block claims (``print(...)  # claim``), or None if some print claims nothing."""
    prints = [line for line in code.splitlines() if line.lstrip().startswith("print(")]
    claims = [line.split("  # ", 1)[1] for line in prints if "  # " in line]
    return claims if prints and len(claims) == len(prints) else None


def _exec(code: str, path, namespace: dict) -> str:
    """Runs one block in ``namespace``; returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(path), "exec"), namespace)
    return printed.getvalue()


def _run_page(path) -> None:
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    for code in _blocks(path, "python"):
        printed = _exec(code, path, namespace)
        claims = _claims(code)
        if claims is not None:
            lines = printed.strip().splitlines()
            assert lines and set(lines) == set(claims), (path.name, claims, lines)


@pytest.mark.parametrize("path", [p for p in PAGES if _blocks(p, "python")], ids=lambda p: p.name)
def test_every_python_block_runs_and_prints_what_it_claims(path):
    text = path.read_text()
    for library in OPTIONAL_LIBRARIES:
        if re.search(rf"^\s*import {library}\b", text, re.M):
            require(library)
    _run_page(path)


@pytest.mark.parametrize("path", [p for p in PAGES if ">>> " in p.read_text()], ids=lambda p: p.name)
def test_doctest_examples_on_the_pages_run(path):
    result = doctest.testfile(str(path), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted and not result.failed


def test_the_claims_check_catches_a_wrong_claim(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nprint(1 + 1)  # 3\n```\n")
    with pytest.raises(AssertionError):
        _run_page(page)


def test_the_pages_have_code_and_every_fence_names_its_language():
    for path in PAGES:
        fences = re.findall(r"^```(\S*)", path.read_text(), re.M)
        openings = fences[::2]
        assert all(openings), f"{path.name}: a code block without a language"
        assert set(openings) <= {"python", "bash", "text", "{toctree}", "{eval-rst}", "{include}"}, path.name
    assert sum(len(_blocks(p, "python")) for p in PAGES) >= 10


# --- particular claims -------------------------------------------------------------------


def test_readme_fits_in_a_few_screens():
    assert len(README.read_text().splitlines()) <= 150


def test_readme_example_is_a_jit_compiled_step_of_at_most_20_lines():
    (code,) = _blocks(README, "python")
    assert len(code.strip().splitlines()) <= 20 and "jax.jit" in code and "optax.chain" in code
    namespace: dict = {}
    _exec(code, README, namespace)
    assert np.isfinite(float(namespace["loss"]))
    assert namespace["opt_state"][1].trace is not None  # rmsprop_jax's state inside the chain


def test_the_packing_snippet_prints_the_plan_it_shows():
    page = ROOT / "docs" / "scaling.md"
    code = next(block for block in _blocks(page, "python") if "packing_plan" in block)
    printed = _exec(code, page, {})
    comments = [line[2:].removesuffix(", ...") for line in code.splitlines() if line.startswith("# ")]
    lines = printed.strip().splitlines()
    assert lines[0].startswith(comments[0]) and lines[1] == comments[1]
    assert lines[2] == next(line.split("# ", 1)[1] for line in code.splitlines() if line.startswith("print(state"))


def test_the_checkpoint_manager_snippet_restores_the_latest_step():
    page = ROOT / "docs" / "scaling.md"
    code = next(block for block in _blocks(page, "python") if "CheckpointManager" in block)
    namespace: dict = {}
    _exec(code, page, namespace)
    assert namespace["manager"].all_steps() == [3, 4, 5]
    np.testing.assert_array_equal(namespace["restored"]["params"]["w"], namespace["params"]["w"])


# --- shell blocks --------------------------------------------------------------------------


def _commands() -> list[tuple[str, str]]:
    """Every shell command of every page, with its page; ``&&`` chains split into commands."""
    found = []
    for path in PAGES:
        for block in _blocks(path, "bash"):
            for line in block.splitlines():
                words = shlex.split(line, comments=True)
                command: list[str] = []
                for word in [*words, "&&"]:
                    if word == "&&":
                        if command:
                            found.append((path.name, shlex.join(command)))
                        command = []
                    else:
                        command.append(word)
    return found


@functools.cache
def _help(program: tuple[str, ...]) -> str:
    run = subprocess.run(
        [sys.executable, *program, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, f"{program} --help failed: {run.stderr[-2000:]}"
    return run.stdout


def _check_pip(words: list[str]) -> None:
    arguments = words[4:]
    extras = PYPROJECT["project"]["optional-dependencies"]
    for argument in arguments:
        if argument.startswith((".[", "-e")) or argument == ".":
            for extra in re.findall(r"\[(.*)\]", argument)[:1]:
                assert set(extra.split(",")) <= set(extras), f"unknown extra in {words}"
        elif "==" in argument:
            name = argument.split("==")[0]
            pins = [d for group in extras.values() for d in group if d.startswith(f"{name}==")]
            ci = (ROOT / ".ci" / "run").read_text()
            assert set(pins) == {argument} or argument in ci, f"{argument} is neither pinned nor in .ci/run"
        elif argument.startswith("-"):
            assert argument in ("--no-deps", "--index-url", "-q", "--upgrade"), argument
        else:
            assert argument.startswith("https://download.pytorch.org/whl/cpu"), argument


def _check(command: str) -> str:
    """Checks one shell command; returns what kind it was."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]  # environment assignments such as XLA_FLAGS=...
    if words[:3] == ["python3", "-m", "venv"] or words[:1] == ["."]:
        return "venv"
    if words[:4] == ["python3", "-m", "pip", "install"]:
        _check_pip(words)
        return "pip"
    if words == ["python3", "-m", "pytest", "-n", "2"]:
        return "suite"
    assert words[0] == "python3", f"unchecked shell command: {command}"
    program = tuple(words[1:3]) if words[1] == "-m" else (words[1],)
    assert program[0] == "-m" or (ROOT / program[0]).is_file(), f"{program} does not exist"
    usage = _help(program)
    arguments = words[1 + len(program) :]
    for number, word in enumerate(arguments):
        option = word.split("=", 1)[0]
        if option.startswith("--"):
            assert option in usage, f"{command}: {option} is not in {program}'s --help"
        elif number == 0 and word.isalpha():
            assert f"{{{word}" in usage or f",{word}" in usage, f"{command}: {word!r} is not a command of {program}"
        elif not re.fullmatch(r"[\w.:/-]+", word):
            pytest.fail(f"{command}: {word!r} is not an option or value of {program}")
    return "program"


@pytest.mark.slow
def test_every_shell_command_is_checked_against_what_it_claims():
    commands = _commands()
    kinds = {_check(command) for _, command in commands}
    assert {"venv", "pip", "suite", "program"} <= kinds
    assert ("README.md", "python3 docs/make.py serve") in commands or any(
        page == "README.md" and "docs/make.py serve" in command for page, command in commands
    )


def test_the_shell_check_rejects_an_unknown_option():
    with pytest.raises(AssertionError, match="--no-such-option"):
        _check("python3 docs/make.py serve --no-such-option")
    with pytest.raises(AssertionError, match="unchecked"):
        _check("curl https://example.com | sh")


def test_readme_quickstart_is_a_venv_line_then_the_two_commands_ci_runs():
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", quickstart, re.S)
    assert len(blocks) == 3 and all("\n" not in block for block in blocks)
    venv, demo, suite = blocks
    assert venv.startswith("python3 -m venv ") and _check(venv) == "venv"
    assert demo.endswith("python3 -m rmsprop_jax.demo")
    ci = (ROOT / ".ci" / "run").read_text()
    assert suite in ci
    assert "python3 -m pytest -n 2" in suite
