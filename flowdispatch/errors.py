"""The error tree: every error flowdispatch raises on its own account.

::

    FlowDispatchError
     ├── GraphError (ValueError)
     │    └── CycleError
     ├── UpstreamError (RuntimeError)
     ├── CancelledError (concurrent.futures.CancelledError)
     ├── OpTimeoutError (TimeoutError)
     ├── NoutError (ValueError)
     ├── ExecutorError (RuntimeError)
     │    └── UnknownExecutorError (LookupError)
     └── SerializationError (TypeError)

    CacheWarning (UserWarning): a value could not be cached, or read back
    SecurityWarning (UserWarning): a connection others could reach or read


Exceptions raised by the user's own ops are never wrapped: they pass through
unchanged, with a note naming the node that raised them.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence

__all__ = [
    "CacheWarning",
    "CancelledError",
    "CycleError",
    "ExecutorError",
    "FlowDispatchError",
    "GraphError",
    "NoutError",
    "OpTimeoutError",
    "SecurityWarning",
    "SerializationError",
    "UnknownExecutorError",
    "UpstreamError",
]


class FlowDispatchError(Exception):
    """The root of every error flowdispatch raises itself."""


class GraphError(FlowDispatchError, ValueError):
    """A graph is malformed: a missing input, a bad edge, an unknown node."""


class CycleError(GraphError):
    """A graph has a cycle; ``.cycle`` lists its node keys in order.

    Examples
    --------
    >>> err = CycleError(["a", "b"])
    >>> err.cycle
    ('a', 'b')
    >>> print(err)
    the graph has a cycle: a -> b -> a. A flowdispatch graph must be acyclic: remove one of these edges.
    """

    def __init__(self, cycle: Sequence[str]):
        self.cycle = tuple(cycle)
        path = " -> ".join([*self.cycle, self.cycle[0]]) if self.cycle else "?"
        super().__init__(
            f"the graph has a cycle: {path}. "
            "A flowdispatch graph must be acyclic: remove one of these edges."
        )

    def __reduce__(self):
        return (type(self), (self.cycle,))


class UpstreamError(FlowDispatchError, RuntimeError):
    """A node did not run because an ancestor failed (Dispatcher.jl's DependencyError).

    ``.upstream`` is the key of the failed ancestor and ``.error`` its exception.

    Examples
    --------
    >>> err = UpstreamError("report-1", "load-2", OSError("disk"))
    >>> err.upstream
    'load-2'
    >>> print(err)
    node 'report-1' did not run: its upstream node 'load-2' failed with OSError: disk
    """

    def __init__(self, key: str, upstream: str, error: BaseException | None = None):
        self.key = key
        self.upstream = upstream
        self.error = error
        reason = f" with {type(error).__name__}: {error}" if error is not None else ""
        super().__init__(f"node {key!r} did not run: its upstream node {upstream!r} failed{reason}")

    def __reduce__(self):
        return (type(self), (self.key, self.upstream, self.error))


class CancelledError(FlowDispatchError, concurrent.futures.CancelledError):
    """A node was cancelled before it could finish (fail-fast or interrupt)."""


class OpTimeoutError(FlowDispatchError, TimeoutError):
    """An op ran longer than its ``timeout``."""


class NoutError(FlowDispatchError, ValueError):
    """An op with ``nout=N`` returned something other than ``N`` values."""


class ExecutorError(FlowDispatchError, RuntimeError):
    """An executor could not be created, reached or used."""


class UnknownExecutorError(ExecutorError, LookupError):
    """An ``executor=`` name is not registered; the message lists the known ones."""


class SerializationError(FlowDispatchError, TypeError):
    """An op or an argument cannot be serialized for another process."""


class CacheWarning(UserWarning):
    """A value could not be saved to or read from the on-disk cache; the run goes on
    (the node runs, and runs again next time)."""


class SecurityWarning(UserWarning):
    """A connection that others could use or read, such as plain TCP to a scheduler
    on another machine."""
