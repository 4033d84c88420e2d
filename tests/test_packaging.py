"""The wheel built from the committed files (``git archive HEAD``) installs into a fresh venv
and imports every public submodule there."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile

import pytest
from helpers import ROOT, require

CHECK = """
import json, pathlib, sys
import rmsprop_jax
for name in rmsprop_jax.SUBMODULES:
    getattr(rmsprop_jax, name)
import rmsprop_jax.demo.cli, rmsprop_jax.presets.conventions
print(json.dumps({"file": rmsprop_jax.__file__, "prefix": sys.prefix, "version": rmsprop_jax.__version__}))
"""


def _see_this_interpreters_packages(python) -> None:
    """Puts this interpreter's site-packages on the new venv's path, after its own.

    ``system_site_packages=True`` would show the *base* interpreter's packages: inside a venv
    (README's ``python3 -m venv .venv``) those are not the ones jax was installed into. A
    ``.pth`` line adds the directory without running the ``.pth`` files in it, so the
    checkout's editable install of rmsprop_jax stays invisible there.
    """
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own = subprocess.run([python, "-c", query], capture_output=True, text=True, check=True).stdout.strip()
    paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (pathlib.Path(own) / "_outer_site_packages.pth").write_text("".join(f"{path}\n" for path in paths))


@pytest.mark.slow
def test_wheel_from_a_clean_copy_installs_and_imports_in_a_fresh_venv(tmp_path):
    require("build")
    # A clean copy of the tracked files: a stale, ignored build/ directory must not ship deleted modules.
    archive = tmp_path / "source.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), "HEAD"], cwd=ROOT, check=True)
    source = tmp_path / "source"
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("rmsprop_jax-*.whl")
    # The venv sees this interpreter's packages (jax, flax, ...) but gets its own rmsprop_jax from the wheel.
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    _see_this_interpreters_packages(python)
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    run = subprocess.run([python, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["file"].startswith(str(environment)), found  # not the editable checkout
    with zipfile.ZipFile(wheel) as contents:
        names = contents.namelist()
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
    assert "rmsprop_jax/example.py" not in names and "rmsprop_jax/py.typed" in names
