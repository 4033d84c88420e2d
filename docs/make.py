"""Build, serve and photograph the documentation site.

    python3 docs/make.py serve        # build strictly, then serve at http://localhost:8000
    python3 docs/make.py build        # build strictly into docs/_build/html
    python3 docs/make.py screenshot   # build, then save the home page as docs/screenshot.png

The build is ``sphinx -W --keep-going``: any warning (a broken reference, a docstring
that does not parse, a notebook cell that raises) fails it. The notebooks are executed on
every build in their small mode (``conf.py`` sets ``RMSPROP_JAX_SMALL=1`` unless it is set). The browser is Debian's
``chromium`` driven by its ``chromedriver`` through selenium (``--no-sandbox``, as root
needs); the test suite uses the same helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
BUILD = DOCS / "_build" / "html"
SCREENSHOT = DOCS / "screenshot.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def build(out: Path = BUILD, *, source: Path = DOCS, fresh: bool = True) -> subprocess.CompletedProcess[str]:
    """Builds the site in ``source`` strictly into ``out`` (from scratch unless ``fresh=False``); returns the run."""
    if fresh and out.exists():
        shutil.rmtree(out)
    doctrees = out.parent / f"{out.name}-doctrees"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-d", str(doctrees)]
    if fresh:
        command.append("-E")
    return subprocess.run([*command, str(source), str(out)], capture_output=True, text=True, check=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def served(directory: Path, port: int = 0, *, quiet: bool = True) -> Iterator[str]:
    """Serves ``directory`` over HTTP on localhost while the block runs; yields its base URL."""
    handler_class = _QuietHandler if quiet else http.server.SimpleHTTPRequestHandler
    handler = functools.partial(handler_class, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chromium(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium under selenium, with its browser and network logs kept.

    The driver is Debian's ``chromedriver``, named explicitly so that Selenium Manager
    never tries to download one; background networking is off, so the only requests are
    the pages'.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def screenshot(out: Path = SCREENSHOT) -> Path:
    """Builds the site and saves its home page, as Chromium renders it, to ``out``."""
    run = build()
    if run.returncode:
        raise SystemExit(run.stdout[-3000:] + run.stderr[-3000:])
    with served(BUILD) as url:
        driver = chromium(width=1280, height=800)
        try:
            driver.get(f"{url}/index.html")
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve", "build", "screenshot"], nargs="?", default="serve")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on, with serve (default 8000)")
    arguments = parser.parse_args(argv)
    if arguments.command == "screenshot":
        print(f"wrote {screenshot()}")
        return
    print(f"building the site strictly into {BUILD} (the notebooks run: about a minute)")
    run = build()
    print(run.stdout[-2000:] + run.stderr[-4000:])
    if run.returncode:
        raise SystemExit(f"the build failed (exit status {run.returncode}); the warnings are above")
    if arguments.command == "serve":
        with served(BUILD, arguments.port, quiet=False) as url:
            print(f"serving {BUILD} at {url.replace('127.0.0.1', 'localhost')}/ (Ctrl-C stops)")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()


if __name__ == "__main__":
    main()
