"""Every notebook runs top to bottom in a fresh kernel (small-budget mode)."""

from __future__ import annotations

import os
import pathlib

import pytest
from helpers import require

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_error(path, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    monkeypatch.setenv("RMSPROP_JAX_SMALL", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot rendered"
    assert os.environ["RMSPROP_JAX_SMALL"] == "1"


def test_there_are_notebooks():
    assert NOTEBOOKS
