"""Kept for the documented path ``flowdispatch.render``: see :mod:`flowdispatch.view.render`."""
from .view.render import *  # noqa: F403
from .view.render import __all__  # noqa: F401
