"""Sphinx configuration of the rmsprop_jax documentation site.

Build strictly (warnings are errors) with ``python3 -m sphinx -W --keep-going -b html docs docs/_build/html``,
or build and serve with ``python3 docs/make.py serve``. The notebooks under ``docs/notebooks``
(a link to ``notebooks/``) are executed during every build in their small mode
(``RMSPROP_JAX_SMALL=1``); a cell that raises fails the build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's rmsprop_jax, installed or not
os.environ.setdefault("RMSPROP_JAX_SMALL", "1")  # the notebooks' small mode, inherited by their kernels
os.environ.setdefault("KERAS_BACKEND", "jax")

import rmsprop_jax  # noqa: E402

project = "rmsprop_jax"
author = "rmsprop_jax developers"
copyright = "2026, rmsprop_jax developers"
release = version = rmsprop_jax.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store", "notebooks/.ipynb_checkpoints"]
root_doc = "index"

# --- MyST and notebook execution --------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # run every notebook on every build: outputs are never stale
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True

# --- API reference ------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# --- HTML: everything served from the site itself, nothing from outside ------------------
html_theme = "furo"
html_title = f"rmsprop_jax {release}"
html_static_path = ["_static"]
html_theme_options = {"source_repository": "", "navigation_with_keys": True}
html_show_sourcelink = False
# MathJax would load from a CDN: no page writes math (formulas are code), so Sphinx adds no
# MathJax script; the build test checks that no page references anything outside the site.
html_favicon = "_static/favicon.svg"  # served by the site, so browsers do not ask for /favicon.ico
