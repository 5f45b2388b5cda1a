"""The Sphinx docs build with warnings as errors, cover the public API, and their examples run.

The build runs ``python -m sphinx -W -b html`` in a subprocess, into a
temporary folder, with a time limit. The ``>>>`` examples of each page run
with ``python -m doctest`` in a subprocess of their own, so that what they
register (an executor name, say) does not leak into the other tests.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

import flowdispatch as fd

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.rst"))
BUILD_TIMEOUT = 300  # seconds; the build takes a few


def require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"building the docs needs {missing}: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> pathlib.Path:
    require("sphinx", "numpydoc")
    out = tmp_path_factory.mktemp("html")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=ROOT,
    )
    assert done.returncode == 0, f"sphinx-build -W failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_the_docs_build_with_warnings_as_errors(built):
    for page in PAGES:
        assert (built / page.replace(".rst", ".html")).is_file(), page
    assert (built / "_images" / "graph.svg").is_file()


def test_the_docs_use_the_pydata_theme_and_show_drawings_at_their_own_size(built):
    index = (built / "index.html").read_text(encoding="utf-8")
    assert "pydata-sphinx-theme" in index or "pydata_sphinx_theme" in index
    images = re.findall(r"<img [^>]*>", index)
    assert len(images) == 2 and not any("width" in img for img in images), images


def test_in_a_browser_the_front_page_fits_and_its_drawings_keep_their_size(built, tmp_path):
    import browser

    if browser.missing():
        pytest.skip(browser.missing())
    with browser.chromium(tmp_path / "profile") as driver:  # a window 1300 px wide
        driver.get((built / "index.html").as_uri())
        code = driver.execute_script(
            "const pre = document.querySelector('article pre');"
            "return [pre.scrollWidth, pre.clientWidth];")
        images = driver.execute_script(
            "return [...document.querySelectorAll('article img')].map("
            "img => [img.complete, img.naturalWidth, img.width]);")
    assert code[0] <= code[1], f"the first code block overflows sideways: {code}"
    assert len(images) == 2
    assert all(done and shown == natural > 300 for done, natural, shown in images), images


def test_each_step_of_the_tutorial_shows_its_graph(built):
    page = (built / "tutorial.html").read_text(encoding="utf-8")
    sections = dict(re.findall(r'<section id="([\w-]+)">(.*?)(?=<section id=|$)', page, re.S))
    steps = ["ops-build-nodes", "look-at-the-graph", "containers-outputs-and-operators",
             "failures-retries-and-reruns", "keep-values-on-disk", "watch-a-run"]
    for step in steps:
        assert '<img alt="' in sections[step], f"no drawing in the tutorial's {step!r}"
    for figure in re.findall(r'src="_images/([\w.-]+)"', page):
        assert (built / "_images" / figure).is_file(), figure


def test_the_api_page_documents_every_public_name(built):
    api = (built / "api.html").read_text(encoding="utf-8")
    assert 'id="flowdispatch.compute"' in api and "compute" in api
    documented = set(re.findall(r'id="(?:module-)?(flowdispatch\.[\w.]+)"', api))
    missing = [name for name in fd.__all__ if f"flowdispatch.{name}" not in documented]
    assert not missing, f"not on the API page: {missing}"
    for name in ("flowdispatch.view.live.LiveGraph", "flowdispatch.testing.check_executor"):
        assert name in documented


@pytest.mark.parametrize("page", [p for p in PAGES if ">>>" in (DOCS / p).read_text()])
def test_the_examples_on_each_page_run(page):
    done = subprocess.run(
        [sys.executable, "-m", "doctest", "-o", "ELLIPSIS", "-o", "NORMALIZE_WHITESPACE",
         str(DOCS / page)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=ROOT,
    )
    assert done.returncode == 0, f"docs/{page}:\n{done.stdout}\n{done.stderr}"


def test_no_machine_paths_in_the_docs_or_notebooks():
    here = [str(ROOT), str(pathlib.Path.home())]
    files = [p for p in [*DOCS.rglob("*"), *(ROOT / "notebooks").glob("*.ipynb")]
             if p.is_file() and "_build" not in p.parts]
    leaks = [(str(p.relative_to(ROOT)), path) for p in files
             for path in here if path != "/" and path in p.read_text(errors="replace")]
    assert not leaks, f"machine paths in committed files: {leaks}"
