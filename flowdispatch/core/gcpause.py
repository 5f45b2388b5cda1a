"""Pausing Python's cyclic garbage collector while building many objects at once."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_gc"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector (if it runs) for a bulk build.

    Building thousands of nodes or tasks makes several objects each; in a
    process that also holds a large graph (or, with a local cluster, the
    scheduler's state), each full collection that these allocations trigger
    walks all of it.

    Examples
    --------
    >>> import gc
    >>> with paused_gc():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
