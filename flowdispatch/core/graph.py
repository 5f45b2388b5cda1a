"""Graph: the targets and all their ancestors, as a networkx DAG.

A graph is derived from its target nodes: an iterative walk over their
dependencies gives the nodes in topological order. The ``networkx.DiGraph``
(nodes are keys, the :class:`~flowdispatch.Node` under attribute ``"node"``,
edges from dependency to dependent) is built from that when first asked for.
A graph is never changed by running it.

Examples
--------
>>> import flowdispatch as fd
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> a = inc(1)
>>> b = inc(a)
>>> g = fd.Graph(b)
>>> len(g), a in g, [n.name for n in g]
(2, True, ['inc', 'inc'])
>>> g.nx.has_edge(a.key, b.key)
True
>>> g.dependents(a) == (b,)
True
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import networkx as nx

from ..errors import CycleError, GraphError
from .node import Node, ancestors
from .traverse import Ref, scan

if TYPE_CHECKING:
    import graphviz

__all__ = ["Graph", "as_nodes"]


def as_nodes(targets: Iterable[Any], what: str = "targets", strict: bool = True) -> tuple[Node[Any], ...]:
    """The nodes inside ``targets`` (nodes, or containers of nodes), each once, in order.

    With ``strict``, a target that holds no node is a ``TypeError``.
    """
    found: dict[str, Ref] = {}
    for target in targets:
        if not scan(target, found) and strict:
            raise TypeError(
                f"{what}: expected nodes (or lists, tuples, dicts of nodes), got "
                f"{type(target).__name__} {target!r}"
            )
    return tuple(found.values())  # type: ignore[arg-type]


class Graph:
    """The targets and all their ancestors, as a DAG.

    Parameters
    ----------
    *targets
        Nodes (or containers of nodes); or a single ``networkx.DiGraph`` whose
        nodes are keys with the Node under attribute ``"node"``.
    """

    def __init__(self, *targets: Any):
        if len(targets) == 1 and isinstance(targets[0], nx.DiGraph):
            targets = _targets_of_nx(targets[0])
        self._targets = as_nodes(targets)
        self._inputs: frozenset[str] = frozenset()
        self._nodes = ancestors(self._targets)

    @classmethod
    def cut(cls, targets: tuple[Node[Any], ...], inputs: frozenset[str]) -> Graph:
        """The ``targets`` and their ancestors, cut at the node keys ``inputs``: those
        stay, as sources whose values must be given, and their ancestors go unless
        another kept node needs them. Unlike :meth:`subgraph`, it checks nothing."""
        graph = cls.__new__(cls)
        graph._targets = targets
        graph._nodes = ancestors(targets, inputs)
        graph._inputs = frozenset(k for k in inputs if k in graph._nodes)
        return graph

    # -- reading -------------------------------------------------------------------
    @property
    def targets(self) -> tuple[Node[Any], ...]:
        """The nodes the graph was built for."""
        return self._targets

    @property
    def nodes(self) -> Mapping[str, Node[Any]]:
        """``{key: node}`` in topological order (read it; never change it)."""
        return self._nodes

    @property
    def inputs(self) -> tuple[Node[Any], ...]:
        """Nodes whose ancestors were cut away: their values must be supplied."""
        return tuple(self._nodes[k] for k in self._nodes if k in self._inputs)

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node[Any]]:
        """The nodes in topological order: every node after its dependencies."""
        return iter(self._nodes.values())

    def __contains__(self, item: object) -> bool:
        key = item._key if isinstance(item, Node) else item
        return isinstance(key, str) and key in self._nodes

    def __getitem__(self, key: str) -> Node[Any]:
        return self._nodes[self._key(key)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self._nodes.keys() == other._nodes.keys() and all(
            {d._key for d in self.deps_of(k)} == {d._key for d in other.deps_of(k)}
            for k in self._nodes
        )

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # equal graphs: unhashable

    def __repr__(self) -> str:
        names = ", ".join(t._key for t in self._targets[:3])
        more = ", ..." if len(self._targets) > 3 else ""
        return f"<Graph: {len(self)} nodes, targets {names}{more}>"

    def _key(self, item: Node[Any] | str) -> str:
        key = item._key if isinstance(item, Node) else item
        if key not in self._nodes:
            raise GraphError(
                f"node {key!r} is not in this graph of {len(self)} nodes; "
                "expected one of the targets or their ancestors"
            )
        return key

    def deps_of(self, key: str) -> tuple[Node[Any], ...]:
        """The in-graph dependencies of the node with ``key`` (none for a cut input)."""
        return () if key in self._inputs else self._nodes[key]._deps

    def dependencies(self, node: Node[Any] | str) -> tuple[Node[Any], ...]:
        """The nodes ``node`` needs directly (within this graph)."""
        return self.deps_of(self._key(node))

    def dependents(self, node: Node[Any] | str) -> tuple[Node[Any], ...]:
        """The nodes that need ``node`` directly (within this graph)."""
        return tuple(self._nodes[k] for k in self._dependents.get(self._key(node), ()))

    @functools.cached_property
    def _dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key in self._nodes:
            for dep in self.deps_of(key):
                out.setdefault(dep._key, []).append(key)
        return out

    @functools.cached_property
    def nx(self) -> nx.DiGraph[str]:
        """The ``networkx.DiGraph``: keys as nodes, edges from dependency to dependent."""
        g = nx.DiGraph()
        g.add_nodes_from((key, {"node": node}) for key, node in self._nodes.items())
        g.add_edges_from((dep._key, key) for key in self._nodes for dep in self.deps_of(key))
        return g

    # -- deriving ------------------------------------------------------------------
    def subgraph(self, targets: Any = None, inputs: Any = None) -> Graph:
        """The ancestors of ``targets``, cut at ``inputs`` (nodes, or their keys).

        ``targets`` defaults to this graph's targets. Inputs stay, as sources;
        their own ancestors go unless a kept node still needs them. So
        ``subgraph(inputs=[x])`` is what is left to compute once ``x`` is known.

        Examples
        --------
        >>> import flowdispatch as fd
        >>> f = fd.op(lambda *xs: sum(xs), name="f")
        >>> a = f(); b = f(a); c = f(b)
        >>> [n.key == k.key for n, k in zip(fd.Graph(c).subgraph(inputs=[b]), [b, c])]
        [True, True]
        >>> len(fd.Graph(c).subgraph(targets=[b]))
        2
        """
        def nodes(items: Any, what: str) -> tuple[Node[Any], ...]:  # nodes or their keys
            return as_nodes([self[i] if isinstance(i, str) else i for i in _listify(items)], what)

        chosen = self._targets if targets is None else nodes(targets, "targets")
        cut = nodes(inputs, "inputs") if inputs is not None else ()
        for node in (*chosen, *cut):
            self._key(node)
        return Graph.cut(chosen, self._inputs | {n._key for n in cut})

    def to_dask(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """A plain dask graph, ``{key: task}``, that any dask scheduler runs.

        Each task applies its op's retry policy and timeout, as the executors do.
        ``values`` (``{key: value}``) supplies the inputs of a cut graph.

        Examples
        --------
        >>> import dask
        >>> import flowdispatch as fd
        >>> n = fd.op(sum)([fd.value(1), fd.value(2)])
        >>> dask.get(fd.Graph(n).to_dask(), n.key)
        3
        """
        from ..executors.dask.lower import to_dask

        return to_dask(self, values or {})

    def to_json(self) -> str:
        """The graph as JSON text; ops are stored by import path (see :meth:`from_json`)."""
        from .jsongraph import dumps

        return dumps(self)

    @classmethod
    def from_json(cls, text: str, *, allow: Iterable[str] = ()) -> Graph:
        """Rebuild a graph from :meth:`to_json` text, importing its ops by path.

        Loading imports the modules the JSON names, which runs their code, and
        running the graph calls its functions with arguments from the JSON. So
        every name is checked before anything is imported: beyond
        flowdispatch's own helpers and builtins that only compute on data
        (:data:`~flowdispatch.core.allowlist.DEFAULT_ALLOW`), only what ``allow``
        names is loaded, else :class:`~flowdispatch.NotAllowedError`.

        .. warning:: Do not run a graph from a source you do not trust, even
           with ``allow``: an allowed function may do whatever its arguments,
           written by that source, ask.

        Parameters
        ----------
        text
            JSON written by :meth:`to_json`.
        allow
            What may be imported: exact names (``"mypackage.ops:fit"``), modules
            (``"mypackage.ops"``, the functions defined in it) or packages with
            everything in them (``"mypackage."``). See
            :mod:`flowdispatch.core.allowlist`.

        Examples
        --------
        >>> import flowdispatch as fd
        >>> g = fd.Graph(fd.collect([fd.value(1), fd.value(2)]))
        >>> fd.Graph.from_json(g.to_json()) == g
        True
        >>> text = g.to_json().replace("flowdispatch.core.node:_collect", "os:system")
        >>> fd.Graph.from_json(text)
        Traceback (most recent call last):
        ...
        flowdispatch.errors.NotAllowedError: ... not allowed: 'os:system'. ...
        """
        from .jsongraph import loads

        return loads(text, allow)

    def to_dot(self, **kwargs: Any) -> str:
        """The DOT text of :meth:`visualize`."""
        source: str = self.visualize(**kwargs).source
        return source

    def visualize(self, filename: str | None = None, format: str | None = None,
                  **kwargs: Any) -> graphviz.Digraph:
        """Render with graphviz (see :func:`flowdispatch.visualize`)."""
        from ..view.render import visualize

        return visualize(self, filename=filename, format=format, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = self.visualize()._repr_mimebundle_(include, exclude)
        return bundle


def _listify(items: Any) -> list[Any]:
    return list(items) if isinstance(items, (list, tuple, set, frozenset)) else [items]


def check_acyclic(g: nx.DiGraph[str]) -> None:
    """Raise :class:`CycleError` naming a cycle of ``g``, if it has one."""
    if not nx.is_directed_acyclic_graph(g):
        raise CycleError([u for u, _ in nx.find_cycle(g)])


def _targets_of_nx(g: nx.DiGraph) -> tuple[Node[Any], ...]:
    check_acyclic(g)
    for key, data in g.nodes(data=True):
        node = data.get("node")
        if not isinstance(node, Node) or node._key != key:
            raise GraphError(
                f"networkx node {key!r}: expected attribute 'node' holding the Node "
                f"with that key, got {node!r}. Build graphs with fd.Graph(*targets)."
            )
        want = {d._key for d in node._deps}
        have = set(g.predecessors(key))
        if want != have:
            raise GraphError(
                f"networkx node {key!r}: its edges come from {sorted(have)}, but the node "
                f"depends on {sorted(want)}; the edges must follow the node's arguments"
            )
    return tuple(data["node"] for key, data in g.nodes(data=True) if g.out_degree(key) == 0)
