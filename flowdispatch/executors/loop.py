"""The scheduling loop that every local executor shares.

State: for each node, how many of its dependencies are not done yet
(``waiting``) and how many dependents still need its value (``needed``).
Nodes whose dependencies are all done wait in ``ready``, a heap ordered by
op priority, then last-ready-first (depth-first, so values are freed early).
The loop hands ready nodes to a :class:`Runner` while it has free slots and
takes finished ones back from a queue; a failed attempt is retried after its
delay (a timer heap) or, for good, marks every descendant ``upstream_failed``.
A value is released once every dependent has used it, unless it is a target
or was given in ``overrides``.

A runner either runs a node at once and returns the outcome (in-line), or
starts it and later calls ``report(key, outcome)`` from any thread.
An outcome is ``(ok, value_or_exception, seconds)``; ``ok`` is ``None`` for
an exception that must stop the run (``KeyboardInterrupt``, ``SystemExit``).

An op's ``timeout``: a node still running at its deadline fails with
:class:`~flowdispatch.OpTimeoutError` and the run goes on; whatever it returns
later is ignored. In-line runners cannot be interrupted: their node fails
when it returns past its deadline.

A runner with ``start_many`` (a process pool, where each call is a round
trip) takes quick nodes in batches: up to :data:`BATCH` ready nodes of ops
whose last run took under :data:`QUICK` seconds, and without a timeout, go
in one call, which holds one slot. Their "start" is then early by at most a
few batch-mates' runs; a node with a timeout always goes alone, so its
deadline counts from its start.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .. import cache
from ..callbacks import HOOKS
from ..errors import GraphError, OpTimeoutError, UpstreamError
from ..lowering import bind
from ..results import Results
from ..retry import retry_delay

if TYPE_CHECKING:
    from ..graph import Graph
    from ..node import Node

__all__ = ["Outcome", "Runner", "attempt", "execute", "note_node"]

Outcome = tuple  # (ok: bool | None, value or exception, seconds)

# Longest blocking wait: a thread blocked on a lock does not see
# _thread.interrupt_main(), nor Ctrl-C on Windows, until it wakes up.
_POLL = 0.1
#: Most nodes in one call of a runner's ``start_many``.
BATCH = 6
#: An op whose last run took less than this many seconds is quick: batched.
QUICK = 0.002


class Runner(Protocol):
    """How an executor runs one node; see the module docstring."""

    slots: int
    stops_timeouts: bool  # whether an op past its timeout is stopped, or abandoned

    def start(self, node: Node, args: tuple, kwargs: dict,
              report: Callable[[str, Outcome], None]) -> Outcome | None: ...

    # optional: start_many(calls: list of (node, args, kwargs, report)) -> list of
    # the exception that kept each from starting, or None; outcomes come by report.

    def cancel(self) -> None: ...

    def abandon(self, key: str) -> None: ...


def attempt(fn: Callable, args: tuple, kwargs: dict) -> Outcome:
    """Call ``fn`` once, timing it; an ``Exception`` becomes a failed outcome."""
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return (False, exc, time.perf_counter() - start)
    return (True, result, time.perf_counter() - start)


def note_node(error: BaseException, key: str) -> BaseException:
    """Add a note naming the node to a user's exception (once)."""
    note = f"flowdispatch: raised by node {key!r}"
    if note not in getattr(error, "__notes__", ()):
        error.add_note(note)
    return error


_AFTER_TIMEOUT = {
    True: "it was stopped",
    False: "it was abandoned: a thread cannot be stopped, so it runs on until the op returns",
}


def _timeout(node: Node) -> float | None:
    op = node._op
    return None if op is None else op._self_settings.timeout


def execute(graph: Graph, runner: Runner, *, overrides: dict[str, Any] | None = None,
            fail_fast: bool = False, callbacks: Iterable[Any] = ()) -> Results:
    """Run ``graph`` with ``runner``; return its :class:`Results`."""
    overrides = overrides or {}
    missing = [k for k in graph._inputs if k not in overrides]
    if missing:
        raise GraphError(
            f"nodes {missing} are inputs of this subgraph: their ancestors were cut away, "
            "so their values must be supplied (overrides={node: value})"
        )
    graph, overrides, plan = cache.prepare(graph, overrides)
    hits, stores = (plan.hits, plan.stores) if plan else ({}, {})
    nodes = graph._nodes
    hooks = {name: [getattr(cb, name) for cb in callbacks if hasattr(cb, name)] for name in HOOKS}
    keep = {t._key for t in graph._targets} | overrides.keys()
    states: dict[str, str] = {}
    values: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}
    durations: dict[str, float] = {}
    attempts: dict[str, int] = {}
    waiting: dict[str, int] = {}
    needed: dict[str, int] = {}
    dependents: dict[str, list[str]] = {}
    ready: list[tuple[int, int, str]] = []
    timers: list[tuple[float, int, str]] = []
    start_many = getattr(runner, "start_many", None)  # takes quick nodes in batches
    quick: dict[int, bool] = {}  # id(op) -> its last run took under QUICK seconds
    seq = itertools.count()

    def push(key: str) -> None:
        op = nodes[key]._op
        priority = op._self_settings.priority if op is not None else 0
        heapq.heappush(ready, (-priority, -next(seq), key))

    for key, node in nodes.items():
        if key in overrides:
            states[key] = "cached" if key in hits else "skipped"
            values[key] = overrides[key]
            continue
        count = 0
        for dep in graph.deps_of(key):
            dkey = dep._key
            needed[dkey] = needed.get(dkey, 0) + 1
            if dkey not in values:
                dependents.setdefault(dkey, []).append(key)
                count += 1
        waiting[key] = count
        if not count:
            push(key)
    for fire in hooks["on_start"]:
        fire(graph=graph)

    def release(node: Node) -> None:
        for dep in node._deps:
            dkey = dep._key
            left = needed[dkey] - 1
            needed[dkey] = left
            if not left and dkey not in keep:
                values.pop(dkey, None)

    def fail(key: str, error: BaseException) -> None:
        states[key] = "failed"
        errors[key] = error
        for fire in hooks["on_node_error"]:
            fire(node=nodes[key], error=error)
        stack = list(dependents.get(key, ()))
        while stack:
            down = stack.pop()
            if down not in states:
                states[down] = "upstream_failed"
                errors[down] = UpstreamError(down, key, error)
                stack.extend(dependents.get(down, ()))

    def finish(key: str, outcome: Outcome) -> bool:
        """Record an outcome; True if the run must stop taking new work."""
        ok, result, seconds = outcome
        durations[key] = seconds
        node = nodes[key]
        limit = _timeout(node)
        if ok and limit is not None and seconds > limit:  # ran in-line, past its limit
            ok, result = False, OpTimeoutError(
                f"node {key!r} ran {seconds:.3g} s, longer than its timeout of {limit:g} s")
        if ok:
            states[key] = "done"
            values[key] = result
            if start_many is not None and node._op is not None:
                quick[id(node._op)] = seconds < QUICK
            if key in stores:
                cache.save(stores[key], result)
            for fire in hooks["on_node_finish"]:
                fire(node=node, duration=seconds)
            release(node)
            for down in dependents.get(key, ()):
                left = waiting[down] - 1
                waiting[down] = left
                if not left:
                    push(down)
            return False
        if ok is None:
            raise result
        op = node._op
        delay = retry_delay(op._self_settings if op is not None else None, result, attempts[key])
        if delay is not None:
            if delay:
                heapq.heappush(timers, (time.monotonic() + delay, next(seq), key))
            else:
                push(key)
            return False
        fail(key, note_node(result, key))
        return fail_fast

    done_queue: queue.SimpleQueue = queue.SimpleQueue()
    report = done_queue.put
    start = runner.start
    slots = max(1, runner.slots)
    running: dict[str, int] = {}  # key -> the attempt in flight
    calls = 0  # slots in use: each holds a node in flight, or a batch of them
    batch_left: dict[str, list[int]] = {}  # key -> [nodes of its batch still in flight]
    deadlines: list[tuple[float, int, str, int]] = []  # (when, seq, key, attempt)
    stopping = False

    def batchable(key: str) -> bool:
        op = nodes[key]._op
        return op is not None and quick.get(id(op), False) and op._self_settings.timeout is None

    def begin(key: str) -> tuple[Node, int, tuple, dict]:
        node = nodes[key]
        attempts[key] = number = attempts.get(key, 0) + 1
        for fire in hooks["on_node_start"]:
            fire(node=node, attempt=number)
        args, kwargs = bind(node, values)
        return node, number, args, kwargs

    def launch(keys: list[str]) -> bool:
        """Start quick nodes in one call; True if one could not start and that stops the run."""
        nonlocal calls
        begun = [(key, *begin(key)) for key in keys]
        errors = start_many([(node, args, kwargs, lambda o, key=key, n=number: report((key, n, o)))
                             for key, node, number, args, kwargs in begun])
        left = [0]
        stop = False
        for (key, _, number, _, _), error in zip(begun, errors):
            if error is None:
                running[key] = number
                batch_left[key] = left
                left[0] += 1
            else:  # could not even start (e.g. not picklable)
                fail(key, error)
                stop = stop or fail_fast
        calls += bool(left[0])
        return stop

    def free(key: str) -> None:
        """``key`` is no longer in flight: its slot is free (its batch's, once all are)."""
        nonlocal calls
        del running[key]
        left = batch_left.pop(key, None)
        if left is not None:
            left[0] -= 1
            if left[0]:
                return
        calls -= 1

    try:
        while True:
            while ready and calls < slots and not stopping:
                key = heapq.heappop(ready)[2]
                if start_many is not None and batchable(key):
                    keys = [key]
                    size = min(BATCH, -(-(len(ready) + 1) // (slots - calls)))  # share them out
                    while ready and len(keys) < size and batchable(ready[0][2]):
                        keys.append(heapq.heappop(ready)[2])
                    if len(keys) > 1:
                        stopping = launch(keys) or stopping
                        continue
                node, number, args, kwargs = begin(key)
                if node._op is None:  # a data node: nothing to run
                    outcome: Outcome | None = (True, args[0], 0.0)
                else:
                    try:
                        outcome = start(node, args, kwargs,
                                        lambda o, key=key, n=number: report((key, n, o)))
                    except Exception as exc:  # could not even start (e.g. not picklable)
                        fail(key, exc)
                        stopping = stopping or fail_fast
                        continue
                if outcome is None:
                    running[key] = number
                    calls += 1
                    limit = _timeout(node)
                    if limit is not None:
                        heapq.heappush(deadlines, (time.monotonic() + limit, next(seq), key, number))
                elif finish(key, outcome):
                    stopping = True
            if running:
                wait = _POLL
                for heap in ((timers,) if stopping else (timers, deadlines)):
                    if heap:
                        wait = min(wait, max(0.0, heap[0][0] - time.monotonic()))
                try:
                    key, number, outcome = done_queue.get(timeout=wait)
                except queue.Empty:
                    pass
                else:
                    if running.get(key) == number:  # else: abandoned at its deadline
                        free(key)
                        if finish(key, outcome):
                            stopping = True
                now = time.monotonic()
                while deadlines and deadlines[0][0] <= now:
                    _, _, key, number = heapq.heappop(deadlines)
                    if running.get(key) == number:
                        free(key)
                        runner.abandon(key)
                        limit = _timeout(nodes[key])
                        error = OpTimeoutError(
                            f"node {key!r} ran longer than its timeout of {limit:g} s; "
                            + _AFTER_TIMEOUT[runner.stops_timeouts])
                        if finish(key, (False, error, limit)):
                            stopping = True
            elif timers and not stopping:
                time.sleep(min(_POLL, max(0.0, timers[0][0] - time.monotonic())))
            elif not ready or stopping:
                break
            now = time.monotonic()
            while timers and timers[0][0] <= now and not stopping:
                push(heapq.heappop(timers)[2])
    except BaseException:
        runner.cancel()
        raise
    for key in nodes:
        if key not in states:
            states[key] = "cancelled"
    results = Results(graph, states, values, errors, durations, attempts, overrides)
    for fire in hooks["on_finish"]:
        fire(results=results)
    return results
