"""Sphinx configuration for flowdispatch's documentation (``make docs``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import flowdispatch  # noqa: E402

project = "flowdispatch"
author = "the flowdispatch authors"
copyright = "the flowdispatch authors"
release = flowdispatch.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.graphviz",
    "sphinx.ext.viewcode",
    "numpydoc",
]

exclude_patterns = ["_build", "images/make_images.py"]
templates_path: list[str] = []

# API pages come from the numpydoc docstrings; the summary tables are written
# out in api.rst, so no stub pages are generated into the source tree.
autosummary_generate = False
autodoc_typehints = "none"  # the signatures show them
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # a subclass's method shows only if it says something new
autodoc_default_options = {"members": True}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# The theme of dask's and networkx's docs.
html_theme = "pydata_sphinx_theme"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"**": []}  # the pages are short: the whole width for text and drawings
html_static_path = ["_static"]
html_css_files = ["flowdispatch.css"]
html_title = f"flowdispatch {release}"
graphviz_output_format = "svg"
