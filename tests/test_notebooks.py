"""The notebooks in notebooks/ run without errors and show the graph.

Each notebook is executed afresh with nbclient, in a Jupyter kernel that runs
this interpreter (``sys.executable -m ipykernel_launcher``), from the
notebooks' folder, with a bounded time per cell; the executed copy is
thrown away. The committed notebooks must carry their outputs (they are read
on a code host), so their stored outputs are checked for a drawing too, in a
form that untrusted notebooks show (a PNG).

Then as a user sees them: JupyterLab on copies of the notebooks, in headless
Chromium (see ``browser.py``). Each notebook is opened without running it,
and every drawing must show as an image; then a notebook is run, and its
live cell must redraw one output in place and end with the table of failures
above the drawing. Skipped where Chromium is not installed (``make test``
installs it).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest

try:
    import ipykernel  # noqa: F401
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
except ImportError as exc:  # fail, not skip: the notebooks are part of the docs
    pytest.fail(f"running the notebooks needs nbclient, nbformat and ipykernel ({exc}): "
                "pip install -e '.[test]'", pytrace=False)

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01-quickstart", "02-distributed", "03-failures-and-retries", "04-dynamic"]
CELL_TIMEOUT = 120  # seconds; each notebook takes well under 30 s in all


def drawings(nb) -> int:
    """How many outputs hold a drawing that shows untrusted: a PNG, alone or in HTML.

    An untrusted notebook (one opened fresh, or on a code host) shows no
    ``image/svg+xml`` and strips ``<svg>`` from HTML, so every output with an
    SVG must carry a PNG as well.
    """
    count = 0
    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            data = output.get("data", {})
            page = data.get("text/html", "")
            shown = "image/png" in data or '<img src="data:image/png;base64,' in page
            assert "<svg" not in page, f"inline SVG, which untrusted notebooks strip: {page[:80]}"
            assert shown or "image/svg+xml" not in data, f"an SVG without a PNG: {cell.source}"
            count += shown
    return count


def errors(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for cell in nb.cells
            for o in cell.get("outputs", ()) if o.get("output_type") == "error"]


@pytest.fixture
def kernel(tmp_path):
    """A kernel manager whose ``python3`` kernel is this interpreter, whatever else is installed."""
    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (flowdispatch tests)",
        "language": "python",
    }))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_draws_the_graph(name, kernel):
    if name == "02-distributed":
        try:
            import distributed  # noqa: F401

            from flowdispatch.executors.dask import DaskExecutor  # noqa: F401
        except ImportError as exc:  # fail, not skip: the notebook is part of the docs
            pytest.fail(f"notebooks/{name}.ipynb needs fd.DaskExecutor and distributed: {exc}")
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert drawings(nb), f"{path.name} was committed without the outputs of a run"
    assert not errors(nb), f"{path.name} was committed with errors: {errors(nb)}"

    client = nbclient.NotebookClient(
        nb, km=kernel, timeout=CELL_TIMEOUT, startup_timeout=60, allow_errors=False,
        record_timing=False, resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if one fails

    assert not errors(nb)
    assert drawings(nb) >= 1, f"{path.name}: no image/png (or PNG <img> in HTML) in its outputs"


# -- in a real browser: JupyterLab in headless Chromium ------------------------------------
LIVE_TIMEOUT = 120  # seconds for running a notebook in the browser (it takes a few)

# Every output of the notebook in view, in order: how many images it shows (loaded,
# with a size on the page), and its text.
SHOWN = """
const panels = document.querySelectorAll('.jp-NotebookPanel');
if (panels.length !== 1) return null;
const panel = panels[0];
return [...panel.querySelectorAll('.jp-OutputArea-output')].map(out => [
  [...out.querySelectorAll('img')].filter(img => img.complete && img.naturalWidth > 0
                                          && img.getBoundingClientRect().width > 0).length,
  out.textContent.slice(0, 300)]);
"""

# Watch the outputs of cell number arguments[0]: the most outputs it had at once, and
# how many different drawings its one output showed once cleared for the run.
WATCH = """
const cell = document.querySelectorAll(
  '.jp-NotebookPanel .jp-Notebook .jp-Cell')[arguments[0]];
const area = cell.querySelector('.jp-OutputArea');
const seen = window.flowdispatchSeen = {most: 0, cleared: false, looks: new Set()};
new MutationObserver(() => {
  const outs = area.querySelectorAll('.jp-OutputArea-output');
  seen.most = Math.max(seen.most, outs.length);
  if (outs.length === 0) seen.cleared = true;
  if (outs.length === 1 && seen.cleared) seen.looks.add(outs[0].innerHTML);
}).observe(area, {childList: true, subtree: true, attributes: true, characterData: true});
"""

# The watched cell's state: its prompt, and what its output shows.
WATCHED = """
const cell = document.querySelectorAll(
  '.jp-NotebookPanel .jp-Notebook .jp-Cell')[arguments[0]];
const out = cell.querySelector('.jp-OutputArea-output');
const seen = window.flowdispatchSeen;
const heads = out ? [...out.querySelectorAll('th')].map(th => th.textContent) : [];
const img = out && out.querySelector('img');
const table = out && out.querySelector('table');
return {prompt: cell.querySelector('.jp-InputArea-prompt').textContent, most: seen.most,
        cleared: seen.cleared,
        frames: seen.looks.size, heads: heads, text: out ? out.textContent : '',
        image: !!img && img.complete && img.naturalWidth > 0,
        table_first: !!img && !!table
          && !!(table.compareDocumentPosition(img) & Node.DOCUMENT_POSITION_FOLLOWING)};
"""


def wait_for(driver, condition, timeout: float, what: str):
    """``condition(driver)``'s first true value, polled; fail after ``timeout`` seconds."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on copies of the notebooks, and a headless Chromium to look at it."""
    import browser

    if browser.missing():
        pytest.skip(browser.missing())
    root = tmp_path_factory.mktemp("notebooks")
    for name in NAMES:
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", root)
    with browser.JupyterLab(root, tmp_path_factory.mktemp("jupyter")) as server, \
            browser.chromium(tmp_path_factory.mktemp("chromium") / "profile") as driver:
        yield server, driver


def open_notebook(lab, name: str) -> list:
    """Open a notebook in a fresh layout, without running it; what its outputs show."""
    server, driver = lab
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    outputs = sum(len(cell.get("outputs", ())) for cell in nb.cells)
    driver.get(server.url(f"lab/workspaces/{name}/tree/{name}.ipynb", "reset"))  # alone
    return wait_for(driver, lambda d: (shown := d.execute_script(SHOWN)) is not None
                    and len(shown) >= outputs and shown, CELL_TIMEOUT,
                    f"JupyterLab to show the {outputs} outputs of {name}.ipynb")


@pytest.mark.parametrize("name", NAMES)
def test_a_notebook_opened_in_jupyterlab_shows_every_drawing_as_an_image(lab, name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    expected = drawings(nb)
    server, driver = lab
    open_notebook(lab, name)
    shown = wait_for(driver, lambda d: (s := d.execute_script(SHOWN))
                     and sum(1 for images, _ in s if images) >= expected and s,
                     CELL_TIMEOUT, f"{expected} drawings shown as images in {name}.ipynb")
    assert sum(1 for images, _ in shown if images) == expected
    leaks = [text for _, text in shown if "_Digraph at 0x" in text or "<svg" in text]
    assert not leaks, f"outputs shown as text instead of drawings: {leaks}"


def test_a_live_cell_redraws_one_output_in_place_and_ends_with_the_failures(lab):
    name = "03-failures-and-retries"
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    live = next(i for i, cell in enumerate(nb.cells)
                if cell.cell_type == "code" and 'progress="graph"' in cell.source)
    server, driver = lab
    open_notebook(lab, name)
    driver.execute_script(WATCH, live)
    run_all(driver)

    def ended(d):
        state = d.execute_script(WATCHED, live)
        done = state["cleared"] and "*" not in state["prompt"] and state["image"] \
            and "failed" in state["heads"]
        return done and state

    state = wait_for(driver, ended, LIVE_TIMEOUT,
                     "the live cell to end with the failures table and the drawing")
    assert state["most"] == 1, "the live graph added outputs instead of redrawing one"
    assert state["frames"] >= 3, f"only {state['frames']} drawings: not redrawn as it ran"
    assert "ValueError: 2024-03: corrupt file" in state["text"] and state["table_first"], state


def run_all(driver) -> None:
    """Run every cell, as a user does: Run > Run All Cells."""
    from selenium.webdriver.common.by import By

    menu = wait_for(driver, lambda d: next((item for item in d.find_elements(
        By.CSS_SELECTOR, ".lm-MenuBar-item") if item.text.strip() == "Run"), None),
        CELL_TIMEOUT, "the Run menu")
    menu.click()
    wait_for(driver, lambda d: d.find_elements(
        By.CSS_SELECTOR, '.lm-Menu-item[data-command="runmenu:run-all"]'),
        CELL_TIMEOUT, "Run All Cells")[0].click()
