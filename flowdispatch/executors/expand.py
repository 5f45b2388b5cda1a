"""Expansion: an op that returns nodes, and what joins the run because of it.

An op may return a :class:`~flowdispatch.Node`, or a container holding nodes
(the containers traversed for arguments). The run record then *expands* the
node: the nodes it returned (its *children*) and their ancestors that are not
in the run yet join it, and the node completes once its children have, with
the returned structure, each node replaced by its value.

This module holds the pieces of that which need no run state: finding the
nodes a value holds (:func:`held`), the nodes an expansion adds, dependencies
first, without recursion (:func:`joining`), and what a rerun gives a new
record (:class:`Replay`): the values its parents returned, so their bodies do
not run again, and the values of the children that completed.

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
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..core.traverse import HasIterator, Ref, scan

if TYPE_CHECKING:
    from ..core.node import Node

__all__ = ["Replay", "held", "joining", "look_up", "note_parent", "replaying"]

_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})


def held(value: Any) -> dict[str, Node] | None:
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


def joining(children: Iterable[Node], known: Mapping[str, Any]) -> list[Node]:
    """The ``children`` and their ancestors whose keys are not in ``known``, each once,
    dependencies first. Iterative: a chain of any length needs no recursion."""
    order: dict[str, Node] = {}
    for child in children:
        if child._key in known or child._key in order:
            continue
        stack: list[tuple[Node, Iterator[Node]]] = [(child, iter(child._deps))]
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
        self.returned = dict(returned)
        self.values = dict(values)


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


def look_up(nodes: Iterable[Node], overrides: Mapping[str, Any]
            ) -> tuple[dict[str, Any], dict[str, str]]:
    """The on-disk cache for nodes that joined a run: ``(hits, stores)`` as in
    :class:`~flowdispatch.cache.CachePlan`, for those of them with ``cache=True``.

    ``overrides`` are the values the user gave (not the cache's hits), so a lineage
    is the one :func:`flowdispatch.cache.prepare` gives the same node in a static run.
    """
    import os

    from .. import cache
    from ..core.graph import Graph

    cached = [node for node in nodes if node._op is not None and node._op.settings.cache]
    if not cached:
        return {}, {}
    keys = cache.lineage_keys(Graph(*cached), dict(overrides), of=cached)
    folder = cache.cache_dir()
    hits: dict[str, Any] = {}
    stores: dict[str, str] = {}
    for node in cached:
        lineage = keys[node._key]
        if isinstance(lineage, BaseException):
            continue  # not tokenizable: it runs, and is not saved
        path = os.path.join(folder, lineage[:2], lineage)
        found, value = cache.load(path) if os.path.exists(path) else (False, None)
        if found:
            hits[node._key] = value
        else:
            stores[node._key] = path
    return hits, stores
