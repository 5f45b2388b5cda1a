"""The progress bar: a callback that counts the nodes of a run as they end.

Examples
--------
>>> import flowdispatch as fd
>>> fd.compute(fd.op(sum)([1, 2]), executor="sync", callbacks=[ProgressBar(disable=True)])
(3,)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.callbacks import Callback

if TYPE_CHECKING:
    from ..core.graph import Graph
    from ..core.node import Node
    from ..core.results import Results
    from ..errors import UpstreamError

__all__ = ["ProgressBar"]


class ProgressBar(Callback):
    """A tqdm progress bar over the nodes of a run."""

    def __init__(self, **tqdm_kwargs: Any):
        self._kwargs = tqdm_kwargs
        self._bar = None

    def on_start(self, *, graph: Graph) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=len(graph), unit="node", **self._kwargs)

    def _step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_node_finish(self, *, node: Node[Any], duration: float) -> None:
        self._step()

    def on_node_error(self, *, node: Node[Any], error: BaseException) -> None:
        self._step()

    def on_node_upstream_failed(self, *, node: Node[Any], error: UpstreamError) -> None:
        self._step()

    def on_expand(self, *, node: Node[Any], children: tuple[Node[Any], ...],
                  nodes: tuple[Node[Any], ...]) -> None:
        if self._bar is not None:  # the run grew
            self._bar.total += len(nodes)
            self._bar.refresh()

    def on_finish(self, *, results: Results) -> None:
        if self._bar is not None:
            self._bar.n = sum(1 for s in results.states.values() if s != "cancelled")
            self._bar.close()
