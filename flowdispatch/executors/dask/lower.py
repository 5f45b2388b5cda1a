"""Nodes as dask tasks, built on the client: the lowering of a graph.

Lowering turns every node of a graph into one ``dask.task_spec.Task`` whose key
is the node key (plus a run's suffix, see :class:`Lowered`), so
``dask.utils.key_split(key)`` is the op name. The task's function is a
:class:`~.worker.Step`, which runs the node on a dask worker (:mod:`.worker`).

Examples
--------
>>> import flowdispatch as fd
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> a = inc(1)
>>> b = inc(a)
>>> lowered = Lowered(fd.Graph(b), {}, run=None)
>>> lowered.tasks[b.key]
<Task 'inc-...' inc(TaskRef('inc-...'))>
>>> import dask
>>> dask.get(lowered.graph(), b.key)  # any dask scheduler runs it
3
"""

from __future__ import annotations

import inspect
import itertools
import os
import pickle
from collections.abc import Collection, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import cloudpickle
from dask.sizeof import sizeof
from dask.task_spec import DataNode, Task, TaskRef

from ...core.node import _identity
from ...core.traverse import Ref, template
from ...errors import SerializationError
from ..calls import by_reference, call_parts, unpicklable
from . import quick
from .worker import Batch, Chain, Code, Picking, Step, pick

if TYPE_CHECKING:
    from ...core.graph import Graph
    from ...core.node import Node

__all__ = ["Lowered", "keys_of", "to_dask"]

#: Overrides bigger than this (``dask.sizeof``) are scattered, not put in the graph.
SCATTER_BYTES = 1 << 20
_EMPTY: dict[str, Any] = {}
_WORKERS = "the dask workers"
_PLAIN = frozenset({int, float, str, bytes, bool, type(None), Ref})  # plain pickle will do
_NESTS = frozenset({list, tuple, dict})  # containers whose large parts are set apart
_SMALL = frozenset({int, float, bool, type(None), Ref})  # never large, plain pickle will do


def _pickled_call(node: Node[Any]) -> tuple[bytes | None, dict[str, Any]]:
    """cloudpickle of the node's argument templates (nodes replaced by references), and
    the large arguments set apart (see :func:`_set_apart`), by the keys standing for them."""
    given_args, given_kwargs = node._args, node._kwargs or _EMPTY
    args, kwargs = given_args, given_kwargs
    if node._deps:  # else no node inside, or opaque data (fd.value(..., traverse=False))
        args, kwargs = template(args), template(kwargs)
    if not args and not kwargs:
        return None, _EMPTY
    if not kwargs and all(type(a) in _SMALL for a in args):  # the common case, quicker
        return pickle.dumps((args, kwargs), protocol=5), _EMPTY
    args, kwargs, apart = _set_apart(node._key, given_args, given_kwargs, args, kwargs)
    if _plain(args) and _plain(kwargs.values()):
        return pickle.dumps((args, kwargs), protocol=5), apart  # the same bytes, 4x faster
    try:
        return cloudpickle.dumps((args, kwargs)), apart
    except Exception as exc:
        error = unpicklable(node, call_parts(node, args, kwargs), _WORKERS, exc)
        raise error from error.__cause__


def _large(value: Any) -> bool:
    """Whether ``value`` is over :data:`SCATTER_BYTES` (``dask.sizeof``; sized alike)."""
    kind = type(value)
    if kind in (bytes, str, bytearray):
        return len(value) > SCATTER_BYTES
    if kind in _PLAIN:
        return False
    return bool(sizeof(value) > SCATTER_BYTES)


def _set_apart(key: str, given_args: tuple[Any, ...], given_kwargs: dict[str, Any],
               args: tuple[Any, ...], kwargs: dict[str, Any],
               ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
    """The templates with each large argument (or large part of a list, tuple or dict
    argument) that holds no node replaced by a reference to a key of its own, and
    those values by their keys.

    A large argument then travels as an argument of the node's task, pickled
    once with the graph, as dask sends a task's arguments; pickled into the
    node's call as well, it would take its size again on the client.
    """
    apart: dict[str, Any] = {}
    if any(_worth_a_look(a, g) for a, g in zip(args, given_args)):
        args = tuple(_away(apart, f"{key}:arg{i}", a, g)
                     for i, (a, g) in enumerate(zip(args, given_args)))
    if any(_worth_a_look(v, given_kwargs[k]) for k, v in kwargs.items()):
        kwargs = {k: _away(apart, f"{key}:{k}", v, given_kwargs[k]) for k, v in kwargs.items()}
    return args, kwargs, apart


def _worth_a_look(value: Any, given: Any) -> bool:
    """Whether argument ``given`` (``value``: its template) may have a part to set apart:
    it holds no node, or it is a list, tuple or dict (a node alone never has one)."""
    return (value is given or type(value) in _NESTS) and _large(given)


def _away(apart: dict[str, Any], name: str, value: Any, given: Any) -> Any:
    """``value`` (the template of ``given``), or if it is large and holds no node, a
    reference to ``name``, under which it joins ``apart``; a list, tuple or dict that
    holds nodes, with its large parts set apart alike."""
    if value is given:  # no node inside
        if not _large(value):
            return value
        apart[name] = value
        return Ref(name)
    kind = type(value)
    if (kind is list or kind is tuple) and type(given) is kind and _large(given):
        return kind(_away(apart, f"{name}.{i}", v, g)
                    for i, (v, g) in enumerate(zip(value, given)))
    if kind is dict and type(given) is dict and _large(given):
        return {k: _away(apart, f"{name}.{k}", v, given[k]) for k, v in value.items()}
    return value


def _plain(values: Any) -> bool:
    """Whether plain pickle will do for ``values``: plain types, or lists and tuples of
    them (a fan-in's list of references, say).

    Examples
    --------
    >>> _plain([1, "a", [Ref("k"), 2.0]]), _plain([[print]])
    (True, False)
    """
    for value in values:
        kind = type(value)
        if kind not in _PLAIN and not (
                (kind is list or kind is tuple) and all(type(v) in _PLAIN for v in value)):
            return False
    return True


def _batchable(op: Any, notes: tuple[Any, ...]) -> bool:
    """Whether the op's nodes may share a task: not ``quick=False``, no timeout (its
    deadline counts from its own start), no resources nor workers (a batch would hold
    them for all its nodes); a priority is shared by batch-mates of the same op."""
    if op is None:
        return False
    s = op.settings
    return s.quick is not False and s.timeout is None and all(n[0] == "priority" for n in notes)


def _annotations(node: Node[Any]) -> tuple[Any, ...]:
    """The node's dask annotations (priority, resources, workers), as hashable pairs."""
    op = node._op
    if op is None:
        return ()
    s = op.settings
    out: list[tuple[Any, ...]] = []
    if s.priority:
        out.append(("priority", s.priority))
    if s.resources:
        out.append(("resources", tuple(sorted(s.resources.items()))))
    if s.workers:
        workers = [s.workers] if isinstance(s.workers, str) else list(s.workers)
        out.append(("workers", tuple(workers)))
        if s.allow_other_workers:
            out.append(("allow_other_workers", True))
    return tuple(out)


class Lowered:
    """A graph as dask tasks, and what could not become one.

    ``tasks`` maps node keys to tasks, whose dask keys are ``dask_key(node key)``:
    the node key itself, or with ``tag`` (a run's own suffix, which
    ``key_split`` ignores) appended, so that no two runs share a task.
    ``broken`` maps the keys of nodes that cannot be pickled to their
    :class:`~flowdispatch.SerializationError`, and ``blocked`` holds their
    descendants, left out too (with ``stop_at_first``, everything after the
    first broken node); ``deferred`` holds the nodes left out to be lowered later
    (see :mod:`.grow`). Overrides become data: small ones tasks that unpickle
    them, large ones ``scatter`` (to send apart), futures ``given`` (used as
    they are). ``stores`` maps node keys to the cache files that their steps
    write their values to (:mod:`flowdispatch.cache`).
    """

    def __init__(self, graph: Graph | list[Node[Any]], overrides: dict[str, Any], run: str | None,
                 tag: str | None = None, stop_at_first: bool = False, starts: bool = True,
                 stores: dict[str, str] | None = None, alias: dict[str, str] | None = None,
                 defer: Collection[str] = ()):
        self.tag = tag
        self.run = run
        self.starts = starts
        self.stores = _EMPTY if stores is None else stores  # the record's: it grows
        #: node key -> its dask key, where that is not the usual one (see :meth:`grow`).
        self.alias: dict[str, str] = {} if alias is None else alias
        self.tasks: dict[str, Any] = {}
        self.annotations: dict[str, tuple[Any, ...]] = {}
        self.scatter: dict[str, Any] = {}
        self.given: dict[str, Any] = {}
        self.broken: dict[str, SerializationError] = {}
        self.blocked: set[str] = set()
        self.node_keys: dict[str, str] = {}  # dask key -> node key
        self.kinds: dict[str, tuple[Any, ...]] = {}  # node key -> what its batch-mates share
        self.ops: set[tuple[Any, ...]] = set()  # the kinds of batch-mates there are
        self.probes: list[str] = []  # nodes that measure their ops (see probe())
        self.later: set[str] = set()  # tasks submitted once the probes have ended
        #: Numbers for the run's new dask keys (batches; nodes moved, see .grow): shared
        #: with the lowerings that grow the run, so no two are named alike.
        self.numbers: Iterator[int] = itertools.count(1)
        #: The node keys of the run's batches, by name (shared, as :attr:`numbers` is).
        self.batches: dict[str, tuple[str, ...]] = {}
        self._ops: dict[int, tuple[Any, ...]] = {}  # id(op) -> (code, notes, kind), see _op()
        #: Nodes left out, to be lowered later: those in ``defer`` and what needs them.
        self.deferred: set[str] = set(defer)
        #: dask key of a batched node -> (its batch's dask key, its place there).
        self.picks: dict[str, tuple[str, int]] = {}
        deps_of = _own_deps if isinstance(graph, list) else _deps_in(graph)
        for node in graph:
            key = node._key
            if key in overrides:
                self._data(key, overrides[key])
                continue
            deps = keys_of(deps_of(key, node))
            if self.deferred and (key in self.deferred or any(d in self.deferred for d in deps)):
                self.deferred.add(key)
                continue
            if (self.broken or self.blocked) and ((stop_at_first and self.broken) or any(
                    d in self.broken or d in self.blocked for d in deps)):
                self.blocked.add(key)
                continue
            self._lower(node, deps)

    def _lower(self, node: Node[Any], deps: tuple[str, ...]) -> None:
        """``node`` as a task (or, if it cannot be pickled, in :attr:`broken`)."""
        key = node._key
        try:
            known = self._ops.get(id(node._op))
            if known is None:
                known = self._ops[id(node._op)] = self._op(node)
            call, apart = _pickled_call(node)
        except SerializationError as exc:
            self.broken[key] = exc
            return
        code, notes, kind = known
        name = self.dask_key(key)
        self.node_keys[name] = key
        step = Step(code, key, call, (*deps, *apart) if apart else deps, self.stores.get(key))
        if deps or apart:  # large arguments: pickled once, with the graph
            self.tasks[key] = Task(name, step, *[TaskRef(self.dask_key(d)) for d in deps],
                                   *apart.values())
        else:
            self.tasks[key] = Task(name, step)
        if notes:
            self.annotations[key] = notes
        if kind is not None:
            self.kinds[key] = kind

    def _op(self, node: Node[Any]) -> tuple[Any, ...]:
        """What the nodes of ``node``'s op share: its :class:`Code`, its annotations,
        and what its batch-mates share (``None``: it is never batched; else one of
        :attr:`ops`)."""
        code = self._code(node, self.run, self.starts)
        notes = _annotations(node)
        op, kind = node._op, None
        if op is not None and _batchable(op, notes):
            kind = (code.code, notes, op.settings.quick)
            self.ops.add(kind)
        return code, notes, kind

    def fuse(self, keep: set[str]) -> int:
        """Fold each linear chain of steps into one :class:`Chain` task; how many folded.

        A node joins the next one when that one is its only user and needs
        nothing else, it is not in ``keep`` (the targets), and both have the same
        annotations. Every dependent hop on a cluster costs scheduler round trips
        (milliseconds), whatever the op; in a chain they are all that is left.
        """
        steps = {k: t.func for k, t in self.tasks.items() if isinstance(t.func, Step)}
        users: dict[str, int] = {}
        for step in steps.values():
            for dep in step.deps:
                users[dep] = users.get(dep, 0) + 1
        link: dict[str, str] = {}  # node -> the one node after it in its chain
        for key, step in steps.items():
            if len(step.deps) == 1:
                dep = step.deps[0]
                if (dep in steps and users[dep] == 1 and dep not in keep
                        and self.annotations.get(dep) == self.annotations.get(key)):
                    link[dep] = key
        folded = 0
        for head in set(link) - set(link.values()):
            chain = [head]
            while chain[-1] in link:
                chain.append(link[chain[-1]])
            last = chain[-1]
            self.tasks[last] = Task(self.dask_key(last), Chain(tuple(steps[k] for k in chain)),
                                    *self.tasks[head].args)
            for key in chain[:-1]:
                del self.tasks[key]
                self.node_keys.pop(self.dask_key(key), None)
                self.annotations.pop(key, None)
            folded += len(chain) - 1
        return folded

    def probe(self, threads: int) -> list[str]:
        """Hold back the nodes of ops never measured, but for a few that measure them
        (:func:`.quick.probe`), and everything that needs them: they are submitted,
        and batched by the probes' durations, once the probes have ended. Returns
        the probe nodes; :attr:`later` holds what waits."""
        if all(declared is not None or quick.measured(code) is not None
               for code, _, declared in self.ops):
            return []
        probes, held = quick.probe(self._independent(), threads)
        later = set(held)
        if later:
            for key, task in self.tasks.items():  # in topological order
                if key not in later and any(self.node_keys.get(d, d) in later
                                            for d in task.dependencies):
                    later.add(key)
        # an op whose probe needs nodes held back for another's is measured next time
        self.probes = [k for k in probes if k not in later]
        self.later = later
        return self.probes

    def bridge(self) -> list[str]:
        """The tasks submitted first that tasks held back need (to hold on to till then)."""
        later, node_keys = self.later, self.node_keys
        needed = {node_keys.get(d, d) for k in later if k in self.tasks
                  for d in self.tasks[k].dependencies}
        return [k for k in needed if k in self.tasks and k not in later]

    def batch(self, addressable: set[str] | None, threads: int, later: bool = False) -> int:
        """Put independent nodes of quick ops in batches, one task each; how many nodes.

        Nodes are independent when they are as deep in the graph; those of one
        op (and priority) at one depth are cut into :func:`.quick.batch_count`
        batches. A batch's dask key starts with the op name (the dashboard
        groups by it). Dependents pick their values out of the batch's tuple on
        their worker; a node in ``addressable`` (``None``: all) also keeps a
        task of its own, keyed as before, that picks its value (for the client).
        Only the nodes of one part are batched: those submitted first, or with
        ``later``, those held back for a probe (see :meth:`probe`).
        """
        groups = self._independent(self.later, later)
        refs: dict[str, Any] = {}  # dask key of a batched node -> how dependents get its value
        done = 0
        for (code, notes, declared, _), keys in groups.items():
            seconds = quick.measured(code)
            if not declared and (seconds is None or seconds >= quick.QUICK):
                continue
            count = quick.batch_count(len(keys), seconds or 0.0, threads)
            for i in range(count):
                done += self._cut(keys[i * len(keys) // count:(i + 1) * len(keys) // count],
                                  notes, addressable, refs, later)
        if refs:
            self._rewire(refs)
            self.picks.update(refs)
        return done

    def _independent(self, part: set[str] | None = None,
                     inside: bool = False) -> dict[tuple[Any, ...], list[str]]:
        """Nodes that may share a batch, by (code, notes, declared, depth): of all
        nodes, or those in ``part`` (``inside``) or not in it."""
        depth: dict[str, int] = {}
        groups: dict[tuple[Any, ...], list[str]] = {}
        node_keys, kinds = self.node_keys, self.kinds
        for key, task in self.tasks.items():  # in topological order
            deps = task.dependencies
            level = 1 + max([depth.get(node_keys.get(d, d), 0) for d in deps]) if deps else 1
            depth[key] = level
            kind = kinds.get(key)
            if (kind is not None and isinstance(task.func, Step)
                    and (part is None or (key in part) == inside)):
                groups.setdefault((*kind, level), []).append(key)
        return groups

    def _cut(self, keys: list[str], notes: tuple[Any, ...], addressable: set[str] | None,
             refs: dict[str, Any], later: bool = False) -> int:
        """One batch of the nodes ``keys``; their tasks become getters, or go."""
        steps = tuple(self.tasks[k].func for k in keys)
        name = f"{steps[0].op.name}-batch{next(self.numbers)}"  # unique in the run
        batch = self.dask_key(name)
        self.batches[name] = tuple(keys)
        self.tasks[name] = Task(batch, Batch.of(name, steps),
                                *(a for k in keys for a in self.tasks[k].args))
        self.node_keys[batch] = name
        if later:
            self.later.add(name)
        if notes:
            self.annotations[name] = notes
        tasks, node_keys, annotations = self.tasks, self.node_keys, self.annotations
        for i, key in enumerate(keys):
            own = tasks[key].key
            refs[own] = (batch, i)
            if addressable is None or key in addressable:
                tasks[key] = Task(own, pick, TaskRef(batch), i)
            else:
                del tasks[key]
                del node_keys[own]
                if notes:
                    del annotations[key]
        return len(keys)

    def _rewire(self, refs: dict[str, Any]) -> None:
        """Point every task that needs a batched node at the node's place in its batch."""
        for key, task in list(self.tasks.items()):
            if task.func is pick or not any(d in refs for d in task.dependencies):
                continue
            sources: dict[Any, int] = {}  # a batch's key, or an argument's position -> source
            plan = []
            for n, arg in enumerate(task.args):
                place = refs.get(arg.key) if isinstance(arg, TaskRef) else None  # type: ignore[arg-type]  # our keys are str
                if place is None:
                    plan.append((sources.setdefault(n, len(sources)), -1))
                else:
                    plan.append((sources.setdefault(place[0], len(sources)), place[1]))
            args = [TaskRef(s) if isinstance(s, str) else task.args[s] for s in sources]
            self.tasks[key] = Task(task.key, Picking(task.func, tuple(plan)), *args)

    def timings(self, durations: dict[str, float]) -> dict[bytes, list[float]]:
        """The ``durations`` of the run's nodes, by their op's pickled code."""
        out: dict[bytes, list[float]] = {}
        for key, kind in self.kinds.items():
            seconds = durations.get(key)
            if seconds is not None:
                out.setdefault(kind[0], []).append(seconds)
        return out

    def dask_key(self, key: str) -> str:
        """The dask key of the node with ``key``."""
        given = self.given.get(key)
        if given is not None:
            return given.key  # type: ignore[no-any-return]  # a distributed.Future's key: str
        if self.alias:
            moved = self.alias.get(key)
            if moved is not None:
                return moved
        return key if self.tag is None else f"{key}-{self.tag}"

    def keep(self, targets: list[str]) -> None:
        """Drop the tasks that no target needs (those only broken nodes needed)."""
        kept: set[str] = set()
        stack = [k for k in targets if k in self.tasks]
        while stack:
            key = stack.pop()
            if key in kept:
                continue
            kept.add(key)
            stack.extend(self.node_keys.get(d, d) for d in self.tasks[key].dependencies
                         if self.node_keys.get(d, d) in self.tasks)
        self.tasks = {k: t for k, t in self.tasks.items() if k in kept}

    def _data(self, key: str, value: Any) -> None:
        """An override, as data on the cluster."""
        if type(value).__name__ == "Future" and type(value).__module__.startswith("distributed"):
            self.given[key] = value  # already on the cluster
        elif sizeof(value) > SCATTER_BYTES:
            self.scatter[self.dask_key(key)] = value
        else:
            try:
                data = cloudpickle.dumps(value)
            except Exception as exc:
                raise SerializationError(
                    f"overrides: the value for node {key!r} (a {type(value).__name__}) cannot "
                    f"be pickled to send it to the dask workers: {exc}") from exc
            name = self.dask_key(key)
            self.node_keys[name] = key
            self.tasks[key] = Task(name, pickle.loads, data)

    @staticmethod
    def _code(node: Node[Any], run: str | None, starts: bool) -> Code:
        """The node's op as it travels (cloudpickle by value where it must)."""
        op = node._op
        if op is None:
            return Code("value", cloudpickle.dumps((_identity, None)), run, starts)
        try:
            return Code(op.op_name, cloudpickle.dumps((by_reference(node._fn), op.settings)), run,  # type: ignore[arg-type]  # an op's node has its function
                        starts)
        except Exception as exc:
            error = unpicklable(node, [("the op", op.__wrapped__),
                                       ("the op's options", op.settings)], _WORKERS, exc)
            raise error from error.__cause__

    def part(self, later: bool | None = None) -> dict[str, Any]:
        """The tasks (by node key): all, or those held back for a probe (``later``), or
        the others (see :meth:`probe`)."""
        if later is None or not self.later:
            return self.tasks if not later else {}
        held = self.later
        return {k: t for k, t in self.tasks.items() if (k in held) == later}

    def graph(self, later: bool | None = None) -> Any:
        """What to hand to ``Client.get``: the tasks (of a :meth:`part`) by dask key, in a
        plain dict, or in a ``HighLevelGraph`` whose layers carry the annotations, if
        any need them."""
        tasks = self.part(later)
        if not self.annotations:
            return {task.key: task for task in tasks.values()}
        from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

        groups: dict[tuple[Any, ...], dict[str, Any]] = {(): {}}
        for key, task in tasks.items():
            groups.setdefault(self.annotations.get(key, ()), {})[task.key] = task
        layers = {}
        for i, (notes, tasks) in enumerate(groups.items()):
            annotations = {name: dict(v) if name == "resources" else
                           list(v) if name == "workers" else v for name, v in notes}
            layers[f"flowdispatch-{i}"] = MaterializedLayer(tasks, annotations=annotations or None)
        return HighLevelGraph(layers, {name: set() for name in layers})

    def expression(self, later: bool | None = None) -> Any:
        """The graph (of a :meth:`part`) for ``Client.get``, as a dask expression named
        by a random token.

        Given a plain graph, ``Client.get`` names it by tokenizing every task
        (25-45 µs each, on the client, before anything is sent); the keys of
        a run are unique already, so a random name does as well. Where dask
        has no such expressions, the graph itself.
        """
        graph = self.graph(later)
        kinds = _expression_kinds()
        if kinds is None:  # pragma: no cover - older dask
            return graph
        plain, high = kinds
        return (plain if isinstance(graph, dict) else high)(graph, _determ_token=os.urandom(16).hex())


def keys_of(nodes: tuple[Node[Any], ...]) -> tuple[str, ...]:
    """The keys of ``nodes`` (a node's dependencies)."""
    return tuple([node._key for node in nodes]) if nodes else ()


def _own_deps(key: str, node: Node[Any]) -> tuple[Node[Any], ...]:
    return node._deps


def _deps_in(graph: Graph) -> Any:
    deps_of = graph.deps_of
    return lambda key, node: deps_of(key)


@lru_cache(maxsize=1)
def _expression_kinds() -> tuple[Any, ...] | None:
    """dask's graph expressions (plain, high-level) if they take a ready-made token."""
    try:
        from dask._expr import Expr, HLGExpr, LLGExpr
    except ImportError:  # pragma: no cover - older dask
        return None
    if "_determ_token" not in inspect.signature(Expr.__new__).parameters:  # pragma: no cover
        return None
    return LLGExpr, HLGExpr


def to_dask(graph: Graph, values: dict[str, Any]) -> dict[str, Any]:
    """``graph`` as a plain dask graph (see :meth:`flowdispatch.Graph.to_dask`)."""
    from ..record import check_inputs

    values = check_inputs(graph, values)
    lowered = Lowered(graph, values, run=None)
    for error in lowered.broken.values():
        raise error
    dsk = {task.key: task for task in lowered.tasks.values()}
    dsk.update((key, DataNode(key, value)) for key, value in lowered.scatter.items())
    return dsk
