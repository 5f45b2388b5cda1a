"""Expansion: an op that returns nodes, and what joins the run because of it.

An op may return a :class:`~flowdispatch.Node`, or a container holding nodes
(the containers traversed for arguments). The run record then *expands* the
node: the nodes it returned (its *children*) and their ancestors that are not
in the run yet join it, and the node completes once its children have, with
the returned structure, each node replaced by its value.

Here are the pieces: finding the nodes a value holds (:func:`held`), the
nodes an expansion adds, dependencies first, without recursion
(:func:`joining`), their cache entries (:func:`look_up`), what a rerun gives
a new record (:class:`Replay`: the values its expanded nodes returned, so
their ops do not run again, and the values of the children that completed),
and :class:`Expanding`, the record's methods that grow a run: the new nodes
join (counted, with their dependents, ready when they can start), a node
waits for its children, and completes (in a loop, not by recursion, so a
chain of 10,000 nested expansions settles at once) when they have. A node
that returns itself or a node waiting for it fails with a
:class:`~flowdispatch.CycleError`; a run may create at most
``max_dynamic_nodes`` nodes (:mod:`flowdispatch.config`).

Examples
--------
>>> import flowdispatch as fd
>>> double = fd.op(lambda x: 2 * x, name="double")
>>> a = double(1)
>>> b = double(a)
>>> list(held([b, 3]).values()) == [b], held([1, 2]), held(7)
(True, None, None)
>>> [n is m for n, m in zip(joining([b], {}), [a, b])]
[True, True]
>>> [n is b for n in joining([b], {a.key: a})]
[True]
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Container, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .. import config
from ..core.results import State
from ..core.traverse import HasIterator, Ref, scan, substitute
from ..errors import CycleError, FlowDispatchError, GraphError, UpstreamError

if TYPE_CHECKING:
    from ..core.node import Node

__all__ = ["MISSING", "Expanding", "Replay", "held", "joining", "look_up", "note_parent", "replaying"]

_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})

#: ``finished(..., value=MISSING)``: the value stayed where the node ran.
MISSING: Any = object()


def held(value: Any) -> dict[str, Node[Any]] | None:
    """``{key: node}`` of the nodes inside ``value``, in order; ``None`` if it holds none.

    A value holding an iterator, or nested deeper than the recursion limit, is
    taken as a plain value (its iterators are the user's, not to be consumed).
    """
    if type(value) in _ATOMS:
        return None
    if isinstance(value, Ref):
        return {value._key: value}  # type: ignore[dict-item]
    found: dict[str, Any] = {}
    try:
        if not scan(value, found):
            return None
    except (HasIterator, RecursionError):
        return None
    return found


def joining(children: Iterable[Node[Any]], known: Container[str]) -> list[Node[Any]]:
    """The ``children`` and their ancestors whose keys are not in ``known``, each once,
    dependencies first. Iterative: a chain of any length needs no recursion."""
    order: dict[str, Node[Any]] = {}
    for child in children:
        if child._key in known or child._key in order:
            continue
        if not child._deps:  # a leaf (a lazy map's children are): no stack to walk
            order[child._key] = child
            continue
        stack: list[tuple[Node[Any], Iterator[Node[Any]]]] = [(child, iter(child._deps))]
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                if dep._key not in order and dep._key not in known:
                    stack.append((dep, iter(dep._deps)))
                    break
            else:
                stack.pop()
                order.setdefault(node._key, node)
    return list(order.values())


def note_parent(error: BaseException, key: str, parent: str) -> BaseException:
    """Add a note to the error of node ``key`` naming the node whose expansion made it.

    Examples
    --------
    >>> note_parent(ValueError("bad"), "parse-1", "map-2").__notes__
    ["flowdispatch: node 'parse-1' was created at run time by node 'map-2'"]
    """
    note = f"flowdispatch: node {key!r} was created at run time by node {parent!r}"
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)
    return error


class Replay:
    """What a rerun gives its record: ``returned`` (parent key -> the value its op
    returned, holding nodes) and ``values`` (key -> value of a child that completed)."""

    __slots__ = ("returned", "values")

    def __init__(self, returned: Mapping[str, Any], values: Mapping[str, Any]):
        self.returned: dict[str, Any] = dict(returned)
        self.values: dict[str, Any] = dict(values)


_REPLAY: contextvars.ContextVar[Replay | None] = contextvars.ContextVar(
    "flowdispatch_replay", default=None)


@contextlib.contextmanager
def replaying(replay: Replay) -> Iterator[None]:
    """Within the block, a new run record takes ``replay`` (see :class:`Replay`)."""
    token = _REPLAY.set(replay)
    try:
        yield
    finally:
        _REPLAY.reset(token)


def current_replay() -> Replay | None:
    """The :class:`Replay` set by :func:`replaying`, if any; a record takes it once."""
    replay = _REPLAY.get()
    if replay is not None:
        _REPLAY.set(None)
    return replay


def look_up(nodes: Iterable[Node[Any]], overrides: Mapping[str, Any]
            ) -> tuple[dict[str, Any], dict[str, str]]:
    """The on-disk cache for nodes that joined a run: ``(hits, stores)`` as in
    :class:`~flowdispatch.cache.CachePlan`, for those of them with ``cache=True``.

    ``overrides`` are the values the user gave (not the cache's hits), so a lineage
    is the one :func:`flowdispatch.cache.prepare` gives the same node in a static run.
    """
    from .. import cache
    from ..core.graph import Graph

    cached = [node for node in nodes if node._op is not None and node._op.settings.cache]
    if not cached:
        return {}, {}
    keys = cache.lineage_keys(Graph(*cached), dict(overrides), of=cached)
    folder = cache.cache_dir()
    cache.require_signing(folder)
    hits: dict[str, Any] = {}
    stores: dict[str, str] = {}
    for node in cached:
        lineage = keys[node._key]
        if isinstance(lineage, BaseException):
            continue  # not tokenizable: it runs, and is not saved
        path = cache.entry_path(lineage, folder)
        found, value = cache.load(path) if cache.maybe_present(path) else (False, None)
        if found:
            hits[node._key] = value
        else:
            stores[node._key] = path
    return hits, stores


class Expanding:
    """What a :class:`~flowdispatch.executors.record.RunRecord` does when a node's
    value holds nodes: the part of the run protocol that grows a run.

    A mixin: the record holds the state (``nodes``, ``states``, ``values``,
    ``parents``, ``children``, ``returned``, the counts and the dependents) and
    calls :meth:`_expand` from ``finished``, then :meth:`_settle`.
    """

    if not TYPE_CHECKING:  # checkers: the attributes below live in RunRecord's slots
        __slots__ = ()

    # the record's state that expansion reads and grows (see RunRecord)
    nodes: dict[str, Node[Any]]
    states: dict[str, State]
    values: dict[str, Any]
    errors: dict[str, BaseException]
    durations: dict[str, float]
    hits: dict[str, Any]
    stores: dict[str, str]
    parents: dict[str, str]
    children: dict[str, list[str]]
    returned: dict[str, Any]
    created: int
    open: int
    on_ready: Any
    _hooks: dict[str, tuple[Any, ...]]
    _dynamic: bool
    _waiting: dict[str, int]
    _dependents: dict[str, list[str]]
    _waiters: dict[str, list[str]]
    _settling: list[str]
    _given: Mapping[str, Any]
    _replayed: Mapping[str, Any]
    _todo: list[str] | None
    _limit: int | None
    _user_overrides: Mapping[str, Any]
    remote: set[str] | None
    on_grow: Any
    on_settled: Any

    def _start_expanding(self, replay: Replay | None) -> None:
        """Nothing has expanded yet (``replay``: a rerun's, see :func:`current_replay`)."""
        #: key -> the node whose expansion brought it into the run.
        self.parents = {}
        #: key of an expanded node -> the keys of the nodes its value held, in order.
        self.children = {}
        #: key of an expanded node -> the value its op returned (holding nodes).
        self.returned = {}
        #: How many nodes joined the run as nodes expanded.
        self.created = 0
        self._dynamic = False  # once a node expanded, no value is released
        self._waiters = {}  # child -> the expanded nodes waiting
        self._settling = []  # expanded nodes whose children have completed
        self._limit = None
        self._given = replay.values if replay else {}
        self._replayed = replay.returned if replay else {}
        self._todo = None
        #: Called with an expanded node's key and the nodes that joined the run because
        #: of it (dependencies first), once they have joined.
        self.on_grow = None
        #: Called with an expanded node's key once it has completed, its children having
        #: all completed (after those of its children that expanded too).
        self.on_settled = None
        #: ``None``, or (for a backend that keeps values where they were made, which
        #: sets it to an empty set) the keys that finished with their value there.
        self.remote = None

    def _has_value(self, key: str) -> bool:
        """Whether ``key`` completed and its value is still to be had (here, or where
        it was made, for a backend that keeps values there: see ``remote``)."""
        return key in self.values or (self.remote is not None and key in self.remote)

    if TYPE_CHECKING:  # the record's methods that expansion calls
        def finished(self, key: str, seconds: float, value: Any = ...,
                     _final: bool = False) -> None: ...

        def failed(self, key: str, error: BaseException,
                   seconds: float | None = None) -> None: ...

        def _doom(self, key: str, error: BaseException | None,
                  culprit: str | None = None) -> None: ...

    def _replay(self, returned: Mapping[str, Any]) -> None:
        """A rerun: the nodes in ``returned`` expand again without running their ops."""
        todo = self._todo = [key for key in returned if key in self._waiting]
        while todo:
            key = todo.pop()
            self.finished(key, 0.0, returned[key])
        self._todo = None

    def _settle(self) -> None:
        """Complete the expanded nodes whose children have all completed (a loop, not
        recursion: a chain of 10,000 nested expansions settles in one go)."""
        settling, values = self._settling, self.values
        while settling:
            key = settling.pop()
            if key not in self.states:  # remote: the backend builds the value where it is
                value = MISSING if self.remote is not None else substitute(
                    self.returned[key], values)
                self.finished(key, self.durations[key], value, _final=True)
                if self.on_settled is not None:
                    self.on_settled(key)

    def _expand(self, key: str, seconds: float, value: Any, found: dict[str, Node[Any]]) -> None:
        """``key`` returned ``value``, holding the nodes ``found``: they join the run."""
        self.durations[key] = seconds
        self._dynamic = True
        try:
            self._check_cycle(key, found)
            new = joining(found.values(), self.nodes)
            self._grow(key, len(new))
        except FlowDispatchError as error:
            return self.failed(key, error, seconds)
        self.returned[key] = value
        self.children[key] = list(found)
        for fire in self._hooks["on_expand"]:
            fire(node=self.nodes[key], children=tuple(found.values()), nodes=tuple(new))
        hits, stores = look_up(new, self._user_overrides)
        if hits or stores:
            self.hits.update(hits)
            self.stores.update(stores)
        for node in new:
            self._join(node, key)
        if self.on_grow is not None:
            self.on_grow(key, new)
        self._wait_for(key, found)

    def _grow(self, key: str, count: int) -> None:
        """Count ``count`` nodes created at run time; past the limit, an error."""
        self.created += count
        limit = self._limit
        if limit is None:
            limit = self._limit = int(config.get("max_dynamic_nodes"))
        if self.created > limit:
            raise GraphError(
                f"node {key!r} expanded into nodes that take this run past "
                f"max_dynamic_nodes={limit} nodes created at run time ({self.created}); "
                "raise it with fd.config.set(max_dynamic_nodes=...) if that is meant, or "
                "check the op for runaway recursion")

    def _check_cycle(self, key: str, found: dict[str, Node[Any]]) -> None:
        """A returned node that is ``key`` itself or one of the nodes waiting for it
        (its parent, their parent, ...) would wait for itself: :class:`CycleError`."""
        parents, states = self.parents, self.states
        for child in found:
            if child not in self.nodes or child in states:
                continue
            chain, up = [key], key
            while up != child:
                parent = parents.get(up)
                if parent is None:
                    break
                up = parent
                chain.append(up)
            else:
                raise CycleError([*reversed(chain)])

    def _join(self, node: Node[Any], parent: str) -> None:
        """New ``node``, returned by (or needed for what was returned by) ``parent``."""
        key, states, values = node._key, self.states, self.values
        self.nodes[key] = node
        self.parents[key] = parent
        if key in self._given:  # a rerun: it completed before
            states[key], values[key] = State.SKIPPED, self._given[key]
            return
        if key in self.hits:
            states[key], values[key] = State.CACHED, self.hits[key]
            return
        if self._todo is not None and key in self._replayed:  # it expands again, unrun
            self.open += 1
            self._waiting[key] = 0
            self._todo.append(key)
            return
        self.open += 1
        count = 0
        for dep in node._deps:
            dkey = dep._key
            if self._has_value(dkey):
                continue
            if dkey in states:
                return self._blocked(key, dkey)
            self._dependents.setdefault(dkey, []).append(key)
            count += 1
        self._waiting[key] = count
        if not count and self.on_ready is not None:
            self.on_ready(node)

    def _blocked(self, key: str, dep: str) -> None:
        """``key`` needs ``dep``, which ended without a value (failed, or released)."""
        error = self.errors.get(dep)
        if error is None:
            error = GraphError(
                f"node {dep!r} is returned by (or needed for) node {key!r}, but its value was "
                "released when every node then known had used it; make it a target "
                "(fd.run(..., node)) to keep it")
            return self.failed(key, error)
        if isinstance(error, UpstreamError):
            dep, error = error.upstream, error.error
        self.states[key] = State.UPSTREAM_FAILED
        self.open -= 1
        self.errors[key] = lost = UpstreamError(key, dep, error)
        for fire in self._hooks["on_node_upstream_failed"]:
            fire(node=self.nodes[key], error=lost)
        self._doom(key, error, dep)

    def _wait_for(self, key: str, found: dict[str, Node[Any]]) -> None:
        """``key`` completes once its children have; at once if they already have."""
        count, waiters, states = 0, self._waiters, self.states
        for child in found:
            if self._has_value(child):
                continue
            if child in states:
                return self._blocked(key, child)
            waiters.setdefault(child, []).append(key)
            count += 1
        self._waiting[key] = count
        if not count:
            self._settling.append(key)

