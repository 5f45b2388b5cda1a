"""Kept for the documented path ``flowdispatch.live``: see :mod:`flowdispatch.view.live`."""
from .view.live import *  # noqa: F403
from .view.live import __all__  # noqa: F401
