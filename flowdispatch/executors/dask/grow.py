"""Growing a run on the cluster as its nodes expand: the tasks to add for one expansion.

The client submits the whole graph up front, so when a node turns out to
expand (its op returned nodes: :mod:`flowdispatch.executors.expand`), its
dependents are already on the cluster, waiting for its dask key. Its task
returned :data:`~.worker.DEFERRED`, and so do theirs, without running their
ops (:mod:`.worker`). Once the run record has taken the expansion in, the
client submits, as one more graph (:func:`grow`):

- the nodes that joined the run, as steps keyed as usual (``"<node key>-<run>"``,
  so the dashboard groups them by op), whose dependencies already on the
  cluster are referred to by their dask keys; a node that joined with its
  value on the client (a cache hit, or a rerun's completed node) as data;
- the nodes they need that the run knows but whose values may be gone from the
  cluster (nobody held them), again under their usual keys: dask uses the
  value it still has, or runs the node again;
- an :class:`~.worker.Assemble` task, under a new key, that builds the
  expanded node's value from its children's;
- every node that waited for the expanded node, and so got a
  :data:`~.worker.DEFERRED`, again under a new key, on top of that task
  (dependencies first).

:attr:`.lower.Lowered.alias` then maps each node that moved to its new dask key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..expand import joining
from .lower import Lowered
from .worker import Assemble

if TYPE_CHECKING:
    from ...core.node import Node
    from ..record import RunRecord

__all__ = ["grow", "moved_key"]


def moved_key(lowered: Lowered, key: str) -> str:
    """A new dask key for node ``key``, one no task of the run has had (its op name first)."""
    lowered.moves += 1
    return f"{key}-{lowered.moves}-{lowered.tag}"


class _Known:
    """The keys a grown graph may refer to as they are: joined now, or alive on the cluster."""

    __slots__ = ("joined", "live")

    def __init__(self, joined: set[str], live: Callable[[str], bool]):
        self.joined = joined
        self.live = live

    def __contains__(self, key: object) -> bool:
        return key in self.joined or self.live(key)  # type: ignore[arg-type]


def grow(lowered: Lowered, record: RunRecord, parent: str, new: list[Node],
         live: Callable[[str], bool], name: str | None = None) -> Lowered:
    """The tasks to submit once node ``parent`` has expanded and ``new`` joined the run.

    ``live(key)`` says whether the value of node ``key`` is surely on the
    cluster (someone holds it). With ``name`` (the dask key that the parent's
    value gets), nothing was submitted yet (a rerun, whose record expanded
    nodes as it was made): no node waits on the cluster for the parent.
    """
    sub = Lowered([], {}, run=lowered.run, tag=lowered.tag, starts=lowered.starts,
                  stores=record.stores, alias=lowered.alias)
    sub._codes, sub.moves, sub.batches = lowered._codes, lowered.moves, lowered.batches
    joined = {node._key for node in new}
    children = record.children[parent]
    roots = [dep for node in new for dep in node._deps if dep._key not in joined]
    roots += [record.nodes[key] for key in children if key not in joined]
    for node in joining(roots, _Known(joined, live)):  # known, maybe gone: dask decides
        _add(sub, record, node)
    for node in new:
        _add(sub, record, node)
    if not all(record._has_value(c) or c not in record.states for c in children):
        return sub  # a child failed: the record has done for the parent and what follows
    _assemble(sub, record, parent, name or moved_key(sub, parent))
    for key in () if name else _downstream(record, parent, joined):
        if key in record.returned:
            _assemble(sub, record, key, moved_key(sub, key))
        else:
            sub.alias[key] = moved_key(sub, key)
            node = record.nodes[key]
            sub._lower(node, tuple(dep._key for dep in node._deps))
            sub.kinds.pop(key, None)  # it keeps a task of its own: later growth refers to it
    lowered.moves = sub.moves
    return sub


def _add(sub: Lowered, record: RunRecord, node: Node) -> None:
    """A node for the cluster: a step, data (its value is here), or nothing (it failed)."""
    key = node._key
    if key in record.returned and key not in record.states:
        return  # it expanded (a rerun's replay): its own growth assembles it
    if key in record.values:
        sub._data(key, record.values[key])
    elif key not in record.states or record._has_value(key):
        sub._lower(node, tuple(dep._key for dep in node._deps))


def _assemble(sub: Lowered, record: RunRecord, key: str, name: str) -> None:
    """The task, keyed ``name``, that builds expanded node ``key``'s value from its children."""
    from dask.task_spec import Task, TaskRef

    from ...core.traverse import template

    children = tuple(record.children[key])
    refs = [TaskRef(sub.dask_key(child)) for child in children]
    sub.alias[key] = name
    sub.node_keys[name] = key
    returned = _dumps(template(record.returned[key]))
    sub.tasks[key] = Task(name, Assemble(key, returned, children, record.stores.get(key)), *refs)


def _dumps(value: Any) -> bytes:
    """``value`` pickled: plainly (10x faster for a list of references), else with cloudpickle."""
    import pickle

    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value)


def _downstream(record: RunRecord, parent: str, joined: set[str]) -> list[str]:
    """The open nodes that wait, directly or not, for ``parent``: dependencies first."""
    states, dependents, waiters = record.states, record._dependents, record._waiters
    found: set[str] = set()
    stack = [parent]
    while stack:
        key = stack.pop()
        for down in (*dependents.get(key, ()), *waiters.get(key, ())):
            if down not in found and down not in states and down not in joined:
                found.add(down)
                stack.append(down)
    return _ordered(record, found)


def _ordered(record: RunRecord, keys: set[str]) -> list[str]:
    """``keys`` with each after those of them it needs (an expanded node needs its
    children, any other node its dependencies). Iterative: any depth will do."""
    def needs(key: str) -> Iterator[str]:
        if key in record.returned:
            return iter(record.children[key])
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
