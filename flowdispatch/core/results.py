"""Results: what happened to every node of a run, and the values that came of it.

States:

``done``
    it ran and returned a value.
``failed``
    it raised (after its retries); ``error(node)`` is the exception.
``upstream_failed``
    it did not run because an ancestor failed: its error is an
    :class:`~flowdispatch.UpstreamError` naming that ancestor.
``cached``
    its value came from the on-disk cache.
``cancelled``
    it did not run because the run stopped first (fail-fast, interrupt).
``skipped``
    it did not run because its value was supplied (``overrides=``).

Values of intermediate nodes are released as soon as every dependent has
used them; the targets' values, and the values that a node which did not
complete still needs, are kept. So ``rerun()`` can go on from there.
In a run where nodes expanded (an op returned nodes, or a lazy ``op.map``
made them), no value is released once the first node has expanded: a node
that joins later may need any of them.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..errors import CancelledError

if TYPE_CHECKING:
    import graphviz

    from .graph import Graph
    from .node import Node

__all__ = ["STATES", "Dynamic", "Results", "State"]

_T = TypeVar("_T")

class State(str, enum.Enum):
    """What happened to a node in a run; each state equals its name as a string.

    Examples
    --------
    >>> State.DONE == "done", State("failed")
    (True, 'failed')
    """

    DONE = "done"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    CACHED = "cached"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    def __repr__(self) -> str:
        return repr(self.value)

    __str__ = str.__str__  # "done", as the plain string prints
    __format__ = str.__format__  # type: ignore[assignment]  # the same method, unbound


STATES = tuple(state.value for state in State)
_COMPLETE = frozenset({State.DONE, State.CACHED, State.SKIPPED})
_REDO = frozenset({State.FAILED, State.UPSTREAM_FAILED, State.CANCELLED})


class Dynamic:
    """What a run's expansions added: ``nodes`` (``{key: node}`` of every node of
    the run, those that joined it included), ``children`` (key of an expanded
    node -> the keys of the nodes its value held, in order) and ``returned``
    (key -> the value its op returned, holding nodes: a rerun expands it again
    without running the op)."""

    __slots__ = ("nodes", "children", "returned")

    def __init__(self, nodes: dict[str, Node[Any]], children: dict[str, list[str]],
                 returned: dict[str, Any]):
        self.nodes: dict[str, Node[Any]] = nodes
        self.children: dict[str, list[str]] = children
        self.returned: dict[str, Any] = returned


class Results:
    """The outcome of :func:`flowdispatch.run`; index it with nodes.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> @fd.op
    ... def half(x):
    ...     if x % 2:
    ...         raise ValueError(f"{x} is odd")
    ...     return x // 2
    >>> good, bad = half(4), half(3)
    >>> res = fd.run(good, bad, half(bad), executor="sync")
    >>> res[good], res.state(bad), res.ok
    (2, 'failed', False)
    >>> res.counts
    {'done': 1, 'failed': 1, 'upstream_failed': 1}
    >>> res[bad]  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 3 is odd
    flowdispatch: raised by node 'half-...'
    """

    def __init__(self, graph: Graph, states: dict[str, str], *,
                 values: dict[str, Any] | None = None,
                 errors: dict[str, BaseException] | None = None,
                 durations: dict[str, float] | None = None,
                 attempts: dict[str, int] | None = None,
                 overrides: dict[str, Any] | None = None,
                 dynamic: Dynamic | None = None,
                 reloads: dict[str, int] | None = None):
        self.graph = graph
        self._dynamic = dynamic
        self.states = states
        self._values = {} if values is None else values
        self._errors = {} if errors is None else errors
        self._durations = {} if durations is None else durations
        self._attempts = {} if attempts is None else attempts
        self._overrides = overrides or {}
        self._reloads = {} if reloads is None else reloads

    def _key(self, node: Node[Any] | str) -> str:
        key = node if isinstance(node, str) else getattr(node, "_key", None)
        if key not in self.states:
            raise KeyError(
                f"{node!r} was not part of this run; expected one of its "
                f"{len(self.states)} nodes (the targets and their ancestors)"
            )
        return key

    @property
    def targets(self) -> tuple[Node[Any], ...]:
        """The nodes the run was for."""
        return self.graph.targets

    @overload
    def __getitem__(self, node: Node[_T]) -> _T: ...
    @overload
    def __getitem__(self, node: str) -> Any: ...
    def __getitem__(self, node: Node[Any] | str) -> Any:
        key = self._key(node)
        state = self.states[key]
        if state in _COMPLETE:
            try:
                return self._values[key]
            except KeyError:
                raise KeyError(
                    f"the value of {key!r} was released once every node that needed it "
                    "had run; make it a target (fd.run(..., node)) to keep it"
                ) from None
        if state == "cancelled":
            raise CancelledError(f"node {key!r} was cancelled before it finished")
        raise self._errors[key]

    def __contains__(self, node: object) -> bool:
        return getattr(node, "_key", node) in self.states

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[Node[Any]]:
        """The run's nodes, in topological order (every node after its dependencies)."""
        states = self.states
        nodes = self.graph if self._dynamic is None else self._dynamic.nodes.values()
        return (node for node in nodes if node._key in states)

    def _node(self, key: str) -> Node[Any]:
        return self.graph[key] if self._dynamic is None else self._dynamic.nodes[key]

    def drawn_graph(self) -> Graph:
        """The graph of every node that ran: the run's graph, with the nodes that joined
        it as nodes expanded (what :meth:`visualize` draws)."""
        dynamic = self._dynamic
        if dynamic is None:
            return self.graph
        from .graph import Graph

        joined = [dynamic.nodes[k] for keys in dynamic.children.values() for k in keys]
        graph = Graph.cut((*self.graph.targets, *joined), self.graph._inputs)
        graph._targets = self.graph.targets
        return graph

    def children(self, node: Node[Any] | str) -> tuple[Node[Any], ...]:
        """The nodes that ``node``'s op returned (or that its lazy map made), in order;
        ``()`` for a node that did not expand.

        Examples
        --------
        >>> import flowdispatch as fd
        >>> @fd.op
        ... def countdown(n):
        ...     return countdown(n - 1) if n else "liftoff"
        >>> res = fd.run(countdown(2), executor="sync")
        >>> [child.name for child in res.children(res.targets[0])], len(res)
        (['countdown'], 3)
        >>> res[res.targets[0]]
        'liftoff'
        """
        key = self._key(node)
        if self._dynamic is None:
            return ()
        return tuple(self._dynamic.nodes[k] for k in self._dynamic.children.get(key, ()))

    @property
    def values(self) -> dict[str, Any]:
        """``{key: value}`` of the values kept: the targets', the given ones, and those
        that a node which did not complete still needs."""
        return self._values

    def state(self, node: Node[Any] | str) -> str:
        """One of ``STATES``: what happened to ``node``."""
        return self.states[self._key(node)]

    def error(self, node: Node[Any] | str) -> BaseException | None:
        """The exception of a failed or upstream-failed node, else ``None``."""
        return self._errors.get(self._key(node))

    def duration(self, node: Node[Any] | str) -> float | None:
        """Seconds its last attempt ran, or ``None`` if it never ran."""
        return self._durations.get(self._key(node))

    def attempts(self, node: Node[Any] | str) -> int:
        """How many times it was started (retries included)."""
        return self._attempts.get(self._key(node), 0)

    def reloads(self, node: Node[Any] | str) -> int:
        """How many times a dask worker loaded its value from the cache instead of running
        it again, after the worker that held the value died (ops declared ``cache=True``)."""
        return self._reloads.get(self._key(node), 0)

    @property
    def ok(self) -> bool:
        """True when every node completed (done, cached or skipped)."""
        return all(state in _COMPLETE for state in self.states.values())

    @property
    def failed(self) -> tuple[Node[Any], ...]:
        """The nodes that raised (not those that only had a failed ancestor)."""
        return tuple(self._node(k) for k, s in self.states.items() if s == "failed")

    @property
    def counts(self) -> dict[str, int]:
        """How many nodes ended in each state."""
        counts = Counter(self.states.values())
        return {state: counts[state] for state in STATES if counts[state]}

    def first_error(self) -> tuple[str, BaseException] | None:
        """``(key, exception)`` of the first node that failed, if any."""
        if not self._errors:
            return None
        for key, state in self.states.items():
            if state == "failed":
                return key, self._errors[key]
        return None

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items())
        return f"<Results: {counts}>"

    def rerun(self, executor: Any = None, **kwargs: Any) -> Results:
        """Run again only what did not complete, reusing the values that did.

        ``kwargs`` are those of :func:`flowdispatch.run`. Returns the results
        of the whole graph: earlier outcomes for nodes that completed before.
        """
        redo = {k for k, s in self.states.items() if s in _REDO}
        if not redo:
            return self
        from ..api import run_graph

        supplied = {k: v for k, v in self._values.items() if k not in redo}
        graph = self.graph
        if self._dynamic is None:
            cut = graph.subgraph(inputs=[graph[k] for k in supplied])
            fresh = run_graph(cut, executor=executor, overrides=supplied, **kwargs)
        else:
            fresh = self._rerun_dynamic(redo, supplied, executor, kwargs)
        return self._merge(fresh, redo)

    def _rerun_dynamic(self, redo: set[str], supplied: dict[str, Any], executor: Any,
                       kwargs: dict[str, Any]) -> Results:
        """Rerun a run whose nodes expanded: the expanded nodes that did not complete
        expand again from the value their op returned, without running it."""
        from ..api import run_graph
        from ..executors.expand import Replay, replaying

        graph, dynamic = self.graph, self._dynamic
        assert dynamic is not None
        returned = {k: v for k, v in dynamic.returned.items() if k in redo}
        given = {k: v for k, v in supplied.items() if k in graph}
        inputs = [graph[k] for k in (*given, *returned) if k in graph]
        cut = graph.subgraph(inputs=inputs)
        with replaying(Replay(returned, supplied)):
            return run_graph(cut, executor=executor, overrides=given, **kwargs)

    def _merge(self, fresh: Results, redo: set[str]) -> Results:
        """These results, with the outcomes of ``fresh`` for the nodes in ``redo``
        (and for the nodes that joined only the rerun)."""
        states = dict(self.states)
        values = dict(self._values)
        errors = {k: e for k, e in self._errors.items() if k not in redo}
        durations, attempts = dict(self._durations), dict(self._attempts)
        reloads = dict(self._reloads)
        for key in [*redo, *(k for k in fresh.states if k not in states)]:
            states[key] = fresh.states.get(key, "cancelled")
            pairs: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
                (values, fresh._values), (errors, fresh._errors), (durations, fresh._durations))
            for mine, theirs in pairs:
                if key in theirs:
                    mine[key] = theirs[key]
            attempts[key] = attempts.get(key, 0) + fresh._attempts.get(key, 0)
            if key in fresh._reloads:
                reloads[key] = reloads.get(key, 0) + fresh._reloads[key]
        dynamic = self._dynamic
        if dynamic is not None and fresh._dynamic is not None:
            dynamic = Dynamic({**dynamic.nodes, **fresh._dynamic.nodes},
                              {**dynamic.children, **fresh._dynamic.children},
                              {**dynamic.returned, **fresh._dynamic.returned})
        return Results(self.graph, states, values=values, errors=errors, durations=durations,
                       attempts=attempts, overrides=self._overrides, dynamic=dynamic,
                       reloads=reloads)

    def visualize(self, filename: str | None = None, format: str | None = None,
                  **kwargs: Any) -> graphviz.Digraph:
        """The graph coloured by state, with durations (see :func:`flowdispatch.visualize`)."""
        from ..view.render import visualize

        return visualize(self, filename=filename, format=format, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from ..view.render import results_bundle

        return results_bundle(self, include=include, exclude=exclude)

    def _repr_html_(self) -> str:
        from ..view.render import results_html

        return results_html(self, drawing=True)
