"""The run record: what every run does, whatever runs its nodes.

One :class:`RunRecord` is made per run, from ``(graph, overrides, callbacks,
fail_fast)``. Making it checks the inputs, applies the on-disk cache
(:func:`flowdispatch.cache.prepare`), marks overrides (``skipped``) and cache
hits (``cached``) and fires ``on_start``. A backend then only reports what
happened to each node, from the thread that drives the run:

- :meth:`~RunRecord.started`: an attempt began;
- :meth:`~RunRecord.finished`: it returned a value (or the value stayed where
  it was made, on a cluster);
- :meth:`~RunRecord.failed`: it raised, for good (after its retries).

Everything else follows from those reports, here and only here: states,
values, errors, attempts and durations; the callbacks (progress bars and the
live graph are callbacks); saving values to the cache; the propagation of a
failure to every descendant (``upstream_failed``, with an
:class:`~flowdispatch.UpstreamError` naming the failed node); which nodes
become ready as their dependencies finish; releasing a value once every
dependent has used it; and, at the end, ``cancelled`` for what never ran and
the :class:`~flowdispatch.Results`.

A value that holds nodes *expands* (:mod:`~flowdispatch.executors.expand`):
those nodes, and their ancestors not in the run yet, join it (``nodes``,
counts and dependents grow, and :attr:`~RunRecord.on_ready` hears of those
that can start), and the node completes once they have, with their values
in place of the nodes (``parents``, ``children`` and ``returned`` say who
made what). Completing a chain of expanded nodes is a loop, not recursion.
A backend whose values stay where they were made (a cluster) sets
:attr:`~RunRecord.remote`: a node that finished without a value then counts
as having one, and an expanded node completes without one (the backend
builds it there); :attr:`~RunRecord.on_grow` tells it which nodes joined,
and :attr:`~RunRecord.on_settled` which expanded node's children have all
completed.

State per node: ``waiting`` (dependencies not finished yet) and ``needed``
(dependents that have yet to use its value). Targets and overrides are never
released.

Examples
--------
>>> import flowdispatch as fd
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> a = inc(1)
>>> b = inc(a)
>>> record = RunRecord(fd.Graph(b))
>>> [n.name for n in record.ready()]  # what can start now
['inc']
>>> record.started(a.key), record.call(a.key)
(1, ((1,), {}))
>>> record.on_ready = lambda node: print("ready:", node is b)
>>> record.finished(a.key, 0.01, 2)
ready: True
>>> record.failed(b.key, ValueError("boom"), 0.02)
>>> res = record.results()
>>> res.state(a), res.state(b), res[a]
('done', 'failed', 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from .. import cache
from ..core.callbacks import HOOKS
from ..core.results import Dynamic, Results, State
from ..errors import GraphError, UpstreamError, note_node
from .calls import bind
from .expand import MISSING, Expanding, current_replay, held, note_parent

if TYPE_CHECKING:
    from ..core.graph import Graph
    from ..core.node import Node

__all__ = ["MISSING", "RunRecord", "check_inputs"]


_DONE, _FAILED, _UPSTREAM = State.DONE, State.FAILED, State.UPSTREAM_FAILED
_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})
#: The hooks of a run without callbacks (shared: never changed).
_NO_HOOKS: dict[str, tuple[Any, ...]] = {name: () for name in HOOKS}


def check_inputs(graph: Graph, overrides: Mapping[str, Any],
                 replayed: Iterable[str] = ()) -> dict[str, Any]:
    """The overrides that concern ``graph``; a cut input without a value (or, in a
    rerun, a value its op returned before) is an error."""
    missing = [node.key for node in graph.inputs
               if node.key not in overrides and node.key not in replayed]
    if missing:
        raise GraphError(
            f"nodes {missing} are inputs of this subgraph: their ancestors were cut away, "
            "so their values must be supplied (overrides={node: value})")
    return {k: v for k, v in overrides.items() if k in graph}


class RunRecord(Expanding):
    """The state of one run, and what follows from each report (see the module docstring).

    Parameters
    ----------
    graph
        What to run.
    overrides
        ``{key: value}``: values given for nodes, which then do not run.
    callbacks
        Objects with some of the :class:`~flowdispatch.Callback` methods.
    fail_fast
        Whether the first failure stops the run (:attr:`stopping` turns true).
    """

    __slots__ = ("graph", "nodes", "overrides", "hits", "stores", "states", "values", "errors",
                 "durations", "attempts", "reloads", "fail_fast", "stopping", "open", "on_release",
                 "on_stop", "on_ready", "_hooks", "_on_node_start", "_on_node_finish",
                 "_waiting", "_needed", "_dependents", "_keep", "parents", "children",
                 "returned", "created", "_dynamic", "_waiters", "_settling", "_given",
                 "_limit", "_user_overrides", "_replayed", "_todo", "remote", "on_grow",
                 "on_settled")

    def __init__(self, graph: Graph, overrides: Mapping[str, Any] | None = None,
                 callbacks: Iterable[Any] = (), fail_fast: bool = False):
        replay = current_replay()
        overrides = check_inputs(graph, overrides or {}, replay.returned if replay else ())
        graph, overrides, plan = cache.prepare(graph, overrides)
        self.graph: Graph = graph
        #: ``{key: node}``: the graph's, then those that join the run as nodes expand.
        self.nodes: dict[str, Node[Any]] = dict(graph.nodes)
        self._user_overrides = overrides if not plan else {
            k: v for k, v in overrides.items() if k not in plan.hits}
        self.overrides: dict[str, Any] = overrides
        self.hits: dict[str, Any] = plan.hits if plan else {}
        #: key -> the cache file its value is saved to once it completes.
        self.stores: dict[str, str] = plan.stores if plan else {}
        self.states: dict[str, State] = {}
        self.values: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.durations: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        #: key -> how often a dask worker reloaded its value from the cache (lost with a worker).
        self.reloads: dict[str, int] = {}
        self.fail_fast: bool = fail_fast
        #: True once a failure has stopped a fail-fast run: start nothing more.
        self.stopping: bool = False
        #: Called with a key whose value no node needs any more (a backend's own copy).
        self.on_release: Any = None
        #: Called once when a failure stops a fail-fast run, before any callback hears of it.
        self.on_stop: Any = None
        #: Called with each node whose dependencies have all finished (it can start now).
        self.on_ready: Any = None
        callbacks = list(callbacks)
        self._hooks = {name: tuple(getattr(cb, name) for cb in callbacks if hasattr(cb, name))
                       for name in HOOKS} if callbacks else _NO_HOOKS
        self._on_node_start = self._hooks["on_node_start"]
        self._on_node_finish = self._hooks["on_node_finish"]
        self._keep = {t._key for t in graph.targets} | overrides.keys()
        self._start_expanding(replay)
        self._count()
        if replay:
            self._replay(replay.returned)
        self._replayed = {}
        for fire in self._hooks["on_start"]:
            fire(graph=graph)

    def _count(self) -> None:
        """Mark the given values; count what each node waits for and is needed by."""
        overrides, hits, states, values = self.overrides, self.hits, self.states, self.values
        waiting: dict[str, int] = {}
        needed: dict[str, int] = {}
        dependents: dict[str, list[str]] = {}
        deps_of = self.graph.deps_of
        for key in self.nodes:
            if key in overrides:
                states[key] = State.CACHED if key in hits else State.SKIPPED
                values[key] = overrides[key]
                continue
            count = 0
            for dep in deps_of(key):
                dkey = dep._key
                needed[dkey] = needed.get(dkey, 0) + 1
                if dkey not in values:
                    dependents.setdefault(dkey, []).append(key)
                    count += 1
            waiting[key] = count
        self._waiting, self._needed, self._dependents = waiting, needed, dependents
        #: How many nodes have not ended yet (done, failed or upstream-failed).
        self.open: int = len(waiting)

    @property
    def hooks(self) -> Mapping[str, tuple[Any, ...]]:
        """``{hook name: (bound methods of the callbacks that have it)}``."""
        return self._hooks

    def ready(self) -> list[Node[Any]]:
        """The nodes that can start at once: every dependency given or cached."""
        states, returned = self.states, self.returned
        return [self.nodes[k] for k, count in self._waiting.items()
                if not count and k not in states and k not in returned]

    def call(self, key: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` for node ``key``, its dependencies' values filled in."""
        return bind(self.nodes[key], self.values)

    def pending(self) -> list[str]:
        """Keys that have not ended yet (not done, failed, given or doomed)."""
        return [k for k in self.nodes if k not in self.states]

    # -- reports --------------------------------------------------------------------
    def started(self, key: str, attempt: int | None = None) -> int:
        """Attempt ``attempt`` (default: the next one) of ``key`` began; returns its number."""
        number = self.attempts.get(key, 0) + 1 if attempt is None else attempt
        self.attempts[key] = number
        for fire in self._on_node_start:
            fire(node=self.nodes[key], attempt=number)
        return number

    def reloaded(self, key: str) -> None:
        """A worker read ``key``'s value back from the cache, where it had been lost
        with another worker (see :meth:`flowdispatch.Results.reloads`)."""
        count = self.reloads[key] = self.reloads.get(key, 0) + 1
        for fire in self._hooks["on_node_reload"]:
            fire(node=self.nodes[key], count=count)

    def finished(self, key: str, seconds: float, value: Any = MISSING,
                 _final: bool = False) -> None:
        """``key`` returned ``value`` after ``seconds``; :attr:`on_ready` hears of the
        dependents that can start now. A value holding nodes expands (see
        :mod:`~flowdispatch.executors.expand`): ``key`` completes once they have
        (``_final``: the value of such a node, with its children's values in it)."""
        if value is not MISSING and type(value) not in _ATOMS and not _final:
            found = held(value)
            if found is not None and self.nodes[key]._op is not None:  # data stays data
                self._expand(key, seconds, value, found)
                self._settle()
                return
        self.states[key] = _DONE
        self.open -= 1
        self.durations[key] = seconds
        nodes = self.nodes
        node = nodes[key]
        if value is not MISSING:
            self.values[key] = value
            if key in self.stores:
                cache.save(self.stores[key], value)
        elif self.remote is not None:
            self.remote.add(key)
        for fire in self._on_node_finish:
            fire(node=node, duration=seconds)
        if not self._dynamic:  # release the values no node needs any more
            needed, keep = self._needed, self._keep
            for dep in node._deps:
                dkey = dep._key
                left = needed[dkey] - 1
                needed[dkey] = left
                if not left and dkey not in keep:
                    self.values.pop(dkey, None)
                    if self.remote:
                        self.remote.discard(dkey)
                    if self.on_release is not None:
                        self.on_release(dkey)
        else:  # the expanded nodes waiting for it
            for parent in self._waiters.pop(key, ()):
                self._waiting[parent] -= 1
                if not self._waiting[parent]:
                    self._settling.append(parent)
        downs = self._dependents.get(key)
        if downs:
            waiting, on_ready = self._waiting, self.on_ready
            for down in downs:
                left = waiting[down] - 1
                waiting[down] = left
                if not left and on_ready is not None:
                    on_ready(nodes[down])
        if self._settling and not _final:
            self._settle()

    def failed(self, key: str, error: BaseException, seconds: float | None = None) -> None:
        """``key`` failed for good with ``error``: it and its descendants are done for."""
        prior = self.states.get(key)
        if prior in (_DONE, _FAILED):
            return
        if prior is None:
            self.open -= 1
        self.states[key] = _FAILED
        self.errors[key] = note_node(error, key)
        if key in self.parents:
            note_parent(error, key, self.parents[key])
        if seconds is not None:
            self.durations[key] = seconds
        if self.fail_fast and not self.stopping:
            self.stopping = True
            if self.on_stop is not None:
                self.on_stop()
        for fire in self._hooks["on_node_error"]:
            fire(node=self.nodes[key], error=error)
        self._doom(key, error)

    def _doom(self, key: str, error: BaseException | None, culprit: str | None = None) -> None:
        """Every descendant of ``key`` that has not ended is ``upstream_failed``, blaming
        ``culprit`` (default: ``key``), the node that failed with ``error``."""
        culprit = culprit or key
        states, errors, nodes = self.states, self.errors, self.nodes
        hooks = self._hooks["on_node_upstream_failed"]
        stack = [*self._dependents.get(key, ()), *self._waiters.get(key, ())]
        while stack:
            down = stack.pop()
            if down not in states:
                states[down] = _UPSTREAM
                self.open -= 1
                errors[down] = lost = UpstreamError(down, culprit, error)
                for fire in hooks:
                    fire(node=nodes[down], error=lost)
                stack.extend(self._dependents.get(down, ()))
                stack.extend(self._waiters.get(down, ()))

    # -- the end --------------------------------------------------------------------
    def results(self) -> Results:
        """The run's :class:`~flowdispatch.Results` (what never ran is ``cancelled``);
        fires ``on_finish``."""
        states, cancelled = self.states, State.CANCELLED
        self.states = states = {key: states.get(key, cancelled) for key in self.nodes}
        dynamic = Dynamic(self.nodes, self.children, self.returned) if self._dynamic else None
        results = Results(self.graph, cast("dict[str, str]", states),  # State: a str
                          values=self.values, errors=self.errors, durations=self.durations,
                          attempts=self.attempts, overrides=self.overrides, dynamic=dynamic,
                          reloads=self.reloads)
        for fire in self._hooks["on_finish"]:
            fire(results=results)
        return results
