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

html_theme = "alabaster"
html_theme_options = {
    "description": "Plain Python functions as a graph you can see and run anywhere.",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
html_title = f"flowdispatch {release}"
