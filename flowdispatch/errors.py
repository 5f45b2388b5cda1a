"""The error tree: every error flowdispatch raises on its own account.

::

    FlowDispatchError
     ├── GraphError (ValueError)
     │    ├── CycleError
     │    └── NotAllowedError
     ├── UpstreamError (RuntimeError)
     ├── CancelledError (concurrent.futures.CancelledError)
     ├── OpTimeoutError (TimeoutError)
     ├── NoutError (ValueError)
     ├── ExecutorError (RuntimeError)
     │    └── UnknownExecutorError (LookupError)
     ├── SerializationError (TypeError)
     ├── CacheError (ValueError)
     └── DotNotFoundError (graphviz.ExecutableNotFound)

    CacheWarning (UserWarning): a value could not be cached, or read back
    SecurityWarning (UserWarning): a connection others could reach or read


Exceptions raised by the user's own ops are never wrapped: they pass through
unchanged, with a note naming the node that raised them.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import TYPE_CHECKING

import graphviz

__all__ = [
    "CacheError",
    "CacheWarning",
    "CancelledError",
    "CycleError",
    "DotNotFoundError",
    "ExecutorError",
    "FlowDispatchError",
    "GraphError",
    "NotAllowedError",
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
        self.cycle: tuple[str, ...] = tuple(cycle)
        path = " -> ".join([*self.cycle, self.cycle[0]]) if self.cycle else "?"
        super().__init__(
            f"the graph has a cycle: {path}. "
            "A flowdispatch graph must be acyclic: remove one of these edges."
        )

    def __reduce__(self) -> tuple[type[CycleError], tuple[tuple[str, ...]]]:
        return (type(self), (self.cycle,))


class NotAllowedError(GraphError):
    """A graph's JSON names functions that the caller did not allow; ``.names`` lists
    them. Nothing was imported (see :meth:`Graph.from_json <flowdispatch.Graph.from_json>`).

    Examples
    --------
    >>> err = NotAllowedError(["os:system"])
    >>> err.names
    ('os:system',)
    >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
    the JSON names functions that were not allowed: 'os:system'. Loading a graph imports the
    modules it names, and running it calls its functions, so nothing was imported: pass
    allow=[...] with those you trust, by exact name ('module:function'), module ('module')
    or package ('package.'). Never run a graph from a source you do not trust.
    """

    def __init__(self, names: Sequence[str]):
        self.names: tuple[str, ...] = tuple(names)
        listed = ", ".join(repr(name) for name in self.names)
        super().__init__(
            f"the JSON names functions that were not allowed: {listed}. Loading a graph "
            "imports the modules it names, and running it calls its functions, so nothing "
            "was imported: pass allow=[...] with those you trust, by exact name "
            "('module:function'), module ('module') or package ('package.'). Never run a "
            "graph from a source you do not trust."
        )

    def __reduce__(self) -> tuple[type[NotAllowedError], tuple[tuple[str, ...]]]:
        return (type(self), (self.names,))


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
        self.key: str = key
        self.upstream: str = upstream
        self.error: BaseException | None = error
        reason = f" with {type(error).__name__}: {error}" if error is not None else ""
        super().__init__(f"node {key!r} did not run: its upstream node {upstream!r} failed{reason}")

    def __reduce__(self) -> tuple[type[UpstreamError], tuple[str, str, BaseException | None]]:
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


class CacheError(FlowDispatchError, ValueError):
    """The cache cannot be used as it is set up (such as a remote ``cache_dir`` without
    a ``cache_secret``); the message says what to set."""


class CacheWarning(UserWarning):
    """A value could not be saved to or read from the on-disk cache; the run goes on
    (the node runs, and runs again next time)."""


class SecurityWarning(UserWarning):
    """A connection that others could use or read, such as plain TCP to a scheduler
    on another machine."""


if TYPE_CHECKING:  # graphviz ships no types; its ExecutableNotFound is a RuntimeError
    _ExecutableNotFound = RuntimeError
else:
    _ExecutableNotFound = graphviz.ExecutableNotFound


class DotNotFoundError(FlowDispatchError, _ExecutableNotFound):
    """Graphviz's ``dot`` program is not on ``PATH``; the message names the fix."""

    def __init__(self) -> None:
        Exception.__init__(
            self,
            "drawing a graph needs Graphviz's `dot` program, which is not on PATH. "
            "Install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew "
            "install graphviz; conda: conda install graphviz), or write DOT text "
            "instead: visualize(..., filename='graph.dot')",
        )

    def __reduce__(self) -> tuple[type[DotNotFoundError], tuple[()]]:
        return (type(self), ())


def note_node(error: BaseException, key: str) -> BaseException:
    """Add a note naming the node to a user's exception (once); return it.

    Examples
    --------
    >>> note_node(ValueError("bad"), "parse-1").__notes__
    ["flowdispatch: raised by node 'parse-1'"]
    """
    note = f"flowdispatch: raised by node {key!r}"
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)
    return error


def stand_in(error: BaseException, reason: BaseException) -> SerializationError:
    """A picklable error that keeps what ``error`` said, when ``error`` itself cannot be
    pickled or unpickled (``reason`` says why): its type's name, message and notes
    (the node, the remote traceback).

    Examples
    --------
    >>> class TwoArgError(Exception):
    ...     def __init__(self, a, b):
    ...         super().__init__(f"{a}/{b}")
    >>> str(stand_in(TwoArgError("bad", "input"), TypeError("missing b")))
    '...TwoArgError: bad/input (the exception could not travel between processes as itself: ...)'
    """
    kind = type(error)
    name = kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}")
    copy = SerializationError(f"{name}: {error} (the exception could not travel between "
                              f"processes as itself: {reason})")
    for note in getattr(error, "__notes__", ()):
        copy.add_note(note)
    return copy
