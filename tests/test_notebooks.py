"""The notebooks in notebooks/ run without errors and show the graph.

Each notebook is executed afresh with nbclient, in a Jupyter kernel that runs
this interpreter (``sys.executable -m ipykernel_launcher``), from the
notebooks' folder, with a bounded time per cell; the executed copy is
thrown away. The committed notebooks must carry their outputs (they are read
on a code host), so their stored outputs are checked for a drawing too.
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
NAMES = ["01-quickstart", "02-distributed", "03-failures-and-retries"]
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
