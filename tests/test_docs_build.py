"""The documentation site builds strictly, loads nothing from outside, and works in a real browser.

The site is built once per test session (``docs/make.py``'s build, ``sphinx -W``: a
warning, a broken reference or a notebook cell that raises fails it) into a directory the
pytest-xdist workers share under a file lock; the notebooks execute during that build.
The browser is Debian's headless ``chromium`` with its ``chromedriver`` (``.ci/run``
installs both).
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import re
import time

import pytest
from helpers import ROOT, in_ci, load_script, require, unavailable

import rmsprop_jax

PAGES = ("index", "getting_started", "porting", "numerics", "scaling", "reinforcement_learning", "speed", "api",
         "notebooks", "changelog", "contributing")  # fmt: skip
NOTEBOOKS = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))


def _make():
    return load_script("docs/make.py")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> pathlib.Path:
    """The built site's directory (built by the first worker that asks; the others wait for it)."""
    require("sphinx")
    require("myst_nb")
    filelock = require("filelock")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's, shared by its workers
    out, record = shared / "docs_html", shared / "docs_build.json"
    with filelock.FileLock(str(shared / "docs_build.lock")):
        if not record.exists():
            run = _make().build(out)
            log = run.stdout[-6000:] + run.stderr[-6000:]
            record.write_text(json.dumps({"returncode": run.returncode, "log": log}))
    result = json.loads(record.read_text())
    if result["returncode"]:
        pytest.fail(f"the strict docs build failed:\n{result['log']}", pytrace=False)
    return out


def _html(site: pathlib.Path, page: str) -> str:
    return (site / f"{page}.html").read_text()


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_page_and_notebook(site):
    for page in (*PAGES, *(f"notebooks/{name}" for name in NOTEBOOKS)):
        assert (site / f"{page}.html").is_file(), page
    assert (site / "searchindex.js").is_file()


@pytest.mark.slow
def test_the_strict_build_fails_on_a_warning(tmp_path):
    """-W is on: a page with a broken cross-reference fails the build (the check cannot pass vacuously)."""
    require("sphinx")
    import shutil

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(ROOT / "docs" / "conf.py", docs / "conf.py")
    (docs / "_static").mkdir()
    (docs / "index.md").write_text("# Broken\n\nSee {func}`rmsprop_jax.rmsprop` and {doc}`missing_page`.\n")
    run = _make().build(tmp_path / "html", source=docs)
    assert run.returncode != 0
    assert "missing_page" in run.stdout + run.stderr


@pytest.mark.slow
def test_notebook_pages_show_their_executed_outputs(site):
    for name in NOTEBOOKS:
        html = _html(site, f"notebooks/{name}")
        assert "<img" in html, f"{name}: no plot rendered"
        assert "Traceback" not in html and "output error" not in html, name
        assert "cell_output" in html, name
    listed = re.findall(r"^notebooks/(\w+)$", (ROOT / "docs" / "notebooks.md").read_text(), re.M)
    assert sorted(listed) == NOTEBOOKS  # every notebook is on the site


@pytest.mark.slow
def test_no_page_loads_anything_from_outside(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(PAGES) + len(NOTEBOOKS)
    tags = "script|link|img|iframe|source|video|audio|embed"
    outside = re.compile(rf"<(?:{tags})\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//")
    for page in pages:
        assert not outside.search(page.read_text()), page.relative_to(site)
    for stylesheet in site.rglob("*.css"):
        assert not re.search(r"(?:@import|url\()\s*[\"']?(?:https?:)?//", stylesheet.read_text()), stylesheet.name


@pytest.mark.slow
def test_the_api_reference_has_every_public_name_with_its_example(site):
    html = _html(site, "api")
    public = [f"rmsprop_jax.{name}" for name in rmsprop_jax.__all__ if name != "__version__"]
    public += [f"rmsprop_jax.presets.{name}" for name in rmsprop_jax.presets.__all__]
    for module in ("checkpoint", "clipping", "demo.data", "demo.model", "demo.train"):
        public += [f"rmsprop_jax.{module}.{name}" for name in importlib.import_module(f"rmsprop_jax.{module}").__all__]
    for name in public:
        assert f'id="{name}"' in html, f"{name} is not on the API page"
    entries = [(m.start(), m.group(1)) for m in re.finditer(r'<dt class="sig sig-object py" id="([\w.]+)">', html)]
    documented = [(start, name) for start, name in entries if not any(name.startswith(f"{o}.") for _, o in entries)]
    assert {name for _, name in documented} >= set(public)
    for number, (start, name) in enumerate(documented):  # every function and class, its fields included
        end = documented[number + 1][0] if number + 1 < len(documented) else len(html)
        assert "Example" in _text(html[start:end]), f"{name} has no Example on the API page"


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    require("selenium")
    make = _make()
    if not (pathlib.Path(make.CHROMIUM).exists() and pathlib.Path(make.CHROMEDRIVER).exists()):
        unavailable(f"the browser test needs Debian's chromium and chromium-driver ({make.CHROMEDRIVER})")
    driver = make.chromium()
    yield driver
    driver.quit()


def _visit(driver, url: str, base: str, settle: float = 0.5) -> str:
    """Opens ``url``; returns the page's text after checking its console and its requests."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get_log("performance")
    driver.get(url)
    time.sleep(settle)
    errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert not errors, f"{url}: console errors {errors}"
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    assert requested and requested[0].startswith(base)
    assert all(r.startswith((base, "data:", "blob:", "about:")) for r in requested), (
        f"{url} requested {[r for r in requested if not r.startswith(base)]}"
    )
    return driver.find_element("tag name", "body").text


@pytest.mark.slow
def test_pages_render_in_chromium_with_no_console_error_and_no_outside_request(site, browser):
    make = _make()
    with make.served(site) as base:
        home = _visit(browser, f"{base}/index.html", base)
        assert "RMSProp for JAX" in home and "Why another RMSProp?" in home

        api = _visit(browser, f"{base}/api.html#rmsprop_jax.rmsprop", base)
        entry = browser.find_element("id", "rmsprop_jax.rmsprop").text
        assert entry.startswith("rmsprop_jax.rmsprop(") and "learning_rate" in entry
        assert "pack_small_leaves" in api and "Example" in api

        porting = _visit(browser, f"{base}/porting.html", base)
        assert "presets.pytorch" in porting and "torch.optim.RMSprop" in porting and "StepLR" in porting

        notebook = _visit(browser, f"{base}/notebooks/flax_mnist1d.html", base)
        assert "RMSProp on MNIST-1D with Flax NNX" in notebook
        assert browser.find_elements("css selector", "img")  # the executed notebook's plots

        _visit(browser, f"{base}/search.html?q=pack_small_leaves", base, settle=0.2)
        deadline = time.monotonic() + 20
        results = ""
        while time.monotonic() < deadline and "found" not in results:
            time.sleep(0.25)
            results = browser.find_element("id", "search-results").text
        assert "found" in results and "Many small leaves" in results, results[:500]


def test_the_browser_test_runs_in_ci():
    """CI installs Chromium (``.ci/run``), so the browser test cannot skip there."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "chromium" in ci and "chromium-driver" in ci
    if in_ci():
        make = _make()
        assert pathlib.Path(make.CHROMIUM).exists() and pathlib.Path(make.CHROMEDRIVER).exists()
