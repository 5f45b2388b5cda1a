"""Callbacks: observe a run as it goes (the progress bar and the live graph are callbacks).

A callback is any object with some of these methods, all taking keyword
arguments only; the scheduling loop calls them from the thread that runs
the loop. :class:`Callback` is a base class whose methods do nothing.

Examples
--------
>>> import flowdispatch as fd
>>> class Names(fd.Callback):
...     def __init__(self):
...         self.seen = []
...     def on_node_finish(self, *, node, duration):
...         self.seen.append(node.name)
>>> names = Names()
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> fd.compute(inc(inc(1)), executor="sync", callbacks=[names])
(3,)
>>> names.seen
['inc', 'inc']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..errors import UpstreamError
    from .graph import Graph
    from .node import Node
    from .results import Results

__all__ = ["HOOKS", "Callback"]

HOOKS = ("on_start", "on_node_start", "on_node_finish", "on_node_error",
         "on_node_upstream_failed", "on_node_reload", "on_expand", "on_finish")


class Callback:
    """Hooks called during a run; override the ones you need."""

    def on_start(self, *, graph: Graph) -> None:
        """The run starts: ``graph`` is what will run."""

    def on_node_start(self, *, node: Node[Any], attempt: int) -> None:
        """``node`` is handed to a worker for the ``attempt``-th time."""

    def on_node_finish(self, *, node: Node[Any], duration: float) -> None:
        """``node`` finished, in ``duration`` seconds."""

    def on_node_error(self, *, node: Node[Any], error: BaseException) -> None:
        """``node`` failed for good (after its retries) with ``error``."""

    def on_node_upstream_failed(self, *, node: Node[Any], error: UpstreamError) -> None:
        """``node`` will not run: an ancestor failed (``error`` is an
        :class:`~flowdispatch.UpstreamError` naming it)."""

    def on_node_reload(self, *, node: Node[Any], count: int) -> None:
        """``node``'s value, lost with a dask worker, was read back from the cache
        rather than computed again (``count``: how often so far in this run)."""

    def on_expand(self, *, node: Node[Any], children: tuple[Node[Any], ...],
                  nodes: tuple[Node[Any], ...]) -> None:
        """``node``'s op returned nodes, ``children`` (in order); ``nodes`` (those of
        them and of their ancestors that were not in the run yet, dependencies first)
        join the run."""

    def on_finish(self, *, results: Results) -> None:
        """The run is over."""
