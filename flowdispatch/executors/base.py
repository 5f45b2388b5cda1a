"""The executor interface: one abstract method, ``run``.

An executor takes a :class:`~flowdispatch.Graph` and returns
:class:`~flowdispatch.Results`. It closes what it created (pools, clusters),
never what it was given, and works as a context manager.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.graph import Graph
    from ..core.results import Results

__all__ = ["Executor"]


class Executor(abc.ABC):
    """Runs graphs. Subclass it and implement :meth:`run`.

    ``flowdispatch.testing.check_executor`` checks that an executor keeps the
    contract: every node of the graph runs at most once per run (retries
    aside), in dependency order; op failures become ``failed`` states, never
    exceptions; dependents of a failure are ``upstream_failed``; ``overrides``
    replace nodes, whose ancestors do not run; with ``fail_fast`` the run
    stops taking new work after the first failure and the rest is ``cancelled``.
    """

    @abc.abstractmethod
    def run(self, graph: Graph, *, overrides: dict[str, Any] | None = None,
            fail_fast: bool = False, callbacks: Iterable[Any] = ()) -> Results:
        """Run every node of ``graph``; ``overrides`` maps keys to given values."""

    def close(self) -> None:
        """Release what the executor created; safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
