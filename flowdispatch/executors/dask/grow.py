"""Growing a run on the cluster as its nodes expand: the tasks to add, as it goes.

The client submits the whole graph up front, so when a node turns out to
expand (its op returned nodes: :mod:`flowdispatch.executors.expand`), its
dependents are already on the cluster, waiting for its dask key. Its task
returned :data:`~.worker.DEFERRED`, and so do theirs, without running their
ops (:mod:`.worker`). The client adds tasks to the run at two moments, each
time as one more graph:

- once the run record has taken an expansion in (:func:`grow`): the nodes
  that joined the run, as steps keyed as usual (``"<node key>-<run>"``, so
  the dashboard groups them by op), their dependencies already on the
  cluster referred to by their dask keys (a node that joined with its value
  on the client, a cache hit or a rerun's completed node, as data); and the
  nodes they need that the run knows but whose values may be gone from the
  cluster (nobody held them), again under their usual keys: dask uses the
  value it still has, or runs the node again. A node that needs an expanded
  node whose value is not built yet waits on the client;
- once the record has completed an expanded node, its children having
  completed, or at once with the children if none of the nodes that joined is
  of an op seen to expand in the run (:func:`settle`; if one expands after
  all, the early task gets :data:`~.worker.DEFERRED` and this is done again
  once it has completed): an :class:`~.worker.Assemble` task, under a new
  key, that builds its value from theirs; and every open node that waited
  for it (it got a :data:`~.worker.DEFERRED`, or waited on the client),
  dependencies first, under new keys, on top of that task, unless it still
  waits for another expanded node (that one's completion lowers it).

So no task ever waits for a task that is not built yet, and each node moves
(:attr:`.lower.Lowered.alias` maps it to its new dask key) only as the
expanded nodes it needs complete, not each time a node below them expands.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from ..expand import joining
from .lower import Lowered, keys_of
from .worker import Assemble, dumps

if TYPE_CHECKING:
    from ...core.node import Node
    from ..record import RunRecord

__all__ = ["grow", "moved_key", "settle"]


def moved_key(lowered: Lowered, key: str) -> str:
    """A new dask key for node ``key``, one no task of the run has had (its op name first)."""
    return f"{key}-{next(lowered.numbers)}-{lowered.tag}"


class _Known:
    """The keys a grown graph may refer to as they are: joined now, alive on the cluster,
    or expanded (their values are built once their children have completed)."""

    __slots__ = ("joined", "live", "returned")

    def __init__(self, joined: set[str], live: Callable[[str], bool],
                 returned: dict[str, Any]):
        self.joined = joined
        self.live = live
        self.returned = returned

    def __contains__(self, key: object) -> bool:
        return key in self.joined or key in self.returned or self.live(key)  # type: ignore[arg-type]


def grow(sub: Lowered, record: RunRecord, parent: str, new: list[Node[Any]],
         live: Callable[[str], bool], ready: Collection[str] = ()) -> None:
    """Add to ``sub`` the tasks for the nodes ``new``, which joined the run as node
    ``parent`` expanded (``live(key)``: whether node ``key``'s value is surely on the
    cluster, someone holding it; ``ready``: expanded nodes whose value's task is
    built, see :func:`settle`)."""
    joined = {node._key for node in new}
    roots = [dep for node in new for dep in node._deps if dep._key not in joined]
    roots += [record.nodes[key] for key in record.children[parent] if key not in joined]
    waiting: set[str] = set()
    for node in joining(roots, _Known(joined, live, record.returned)):  # known, maybe gone: dask decides
        _add(sub, record, node, waiting, ready)
    for node in new:
        _add(sub, record, node, waiting, ready)


def settle(sub: Lowered, record: RunRecord, key: str, ready: Collection[str] = ()) -> None:
    """Add to ``sub`` the task that builds expanded node ``key``'s value, and the open
    nodes that wait for it, moved on top of it.

    The client calls it once ``key`` has completed; or, early, as ``key`` expands,
    with its children's tasks (``key`` then in ``ready``, as the expanded nodes
    whose value's task is built): if no child expands in turn, nothing waits
    for the client between the children and what needs ``key``.
    """
    _assemble(sub, record, key, moved_key(sub, key))
    waiting: set[str] = set()
    for down in _downstream(record, key):
        node = record.nodes[down]
        if _blocked(record, node, waiting, ready):
            continue
        sub.alias[down] = moved_key(sub, down)
        sub.tasks.pop(down, None)  # lowered again: after what it needs (see Lowered.probe)
        sub._lower(node, keys_of(node._deps))
        sub.kinds.pop(down, None)  # it keeps a task of its own: later growth refers to it


def _blocked(record: RunRecord, node: Node[Any], waiting: set[str],
             ready: Collection[str] = ()) -> bool:
    """Whether ``node`` needs an expanded node whose value is not built yet (not in
    ``ready``), or a node in ``waiting``, left out for that: then it joins ``waiting``."""
    returned, states = record.returned, record.states
    for dep in node._deps:
        dkey = dep._key
        if dkey in waiting or (dkey in returned and dkey not in states and dkey not in ready):
            waiting.add(node._key)
            return True
    return False


def _add(sub: Lowered, record: RunRecord, node: Node[Any], waiting: set[str],
         ready: Collection[str]) -> None:
    """A node for the cluster: a step, data (its value is here), or nothing (it failed,
    it expanded, or it waits for an expanded node: see :func:`settle`)."""
    key = node._key
    if key in record.returned and key not in record.states:
        return  # it expanded (a rerun's replay): its completion builds its value
    if key in record.values:
        sub._data(key, record.values[key])
    elif (key not in record.states or record._has_value(key)) and not _blocked(
            record, node, waiting, ready):
        sub._lower(node, keys_of(node._deps))


def _assemble(sub: Lowered, record: RunRecord, key: str, name: str) -> None:
    """The task, keyed ``name``, that builds expanded node ``key``'s value from its children."""
    from dask.task_spec import Task, TaskRef

    from ...core.traverse import template

    children = tuple(record.children[key])
    refs = [TaskRef(sub.dask_key(child)) for child in children]
    sub.alias[key] = name
    sub.node_keys[name] = key
    value = record.returned[key]
    returned = None if _plain_list(value, children) else dumps(template(value))
    sub.tasks.pop(key, None)  # built again: after its children
    sub.tasks[key] = Task(name, Assemble(key, returned, children, record.stores.get(key)), *refs)


def _plain_list(value: Any, children: tuple[str, ...]) -> bool:
    """Whether ``value`` is a plain list of the nodes ``children`` (a lazy map's): its
    value is then the list of theirs, with no template to fill in."""
    return type(value) is list and len(value) == len(children) and all(
        getattr(node, "_key", None) == child for node, child in zip(value, children))


def _downstream(record: RunRecord, parent: str) -> list[str]:
    """The open nodes that need ``parent``, directly or not: dependencies first."""
    states, dependents = record.states, record._dependents
    found: set[str] = set()
    stack = [parent]
    while stack:
        key = stack.pop()
        for down in dependents.get(key, ()):
            if down not in found and down not in states:
                found.add(down)
                stack.append(down)
    return _ordered(record, found)


def _ordered(record: RunRecord, keys: set[str]) -> list[str]:
    """``keys`` with each after those of them it depends on. Iterative: any depth will do."""
    def needs(key: str) -> Iterator[str]:
        return (dep._key for dep in record.nodes[key]._deps)

    order: dict[str, None] = {}
    seen: set[str] = set()
    for start in keys:
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, needs(start))]
        while stack:
            key, deps = stack[-1]
            for dep in deps:
                if dep in keys and dep not in seen:
                    seen.add(dep)
                    stack.append((dep, needs(dep)))
                    break
            else:
                stack.pop()
                order.setdefault(key, None)
    return list(order)
