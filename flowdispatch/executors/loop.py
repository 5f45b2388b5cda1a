"""The scheduling loop that every local executor shares.

A :class:`Loop` drives one run: its :class:`~.record.RunRecord` says which
nodes are ready and takes the outcome of each; the loop decides only when a
ready node starts and on which :class:`Runner`. Ready nodes wait in a heap
ordered by op priority, then last-ready-first (depth-first, so values are
freed early). The loop hands them to the runner while it has free slots and
takes finished ones back from a queue; a failed attempt is retried after its
delay (a timer heap, :func:`flowdispatch.core.retry.retry_delay`) or reported as
failed for good.

A runner either runs a node at once and returns the outcome (in-line), or
starts it and later calls ``report(outcome)`` from any thread. An outcome is
``(ok, value_or_exception, seconds)``; ``ok`` is ``None`` for an exception
that must stop the run (``KeyboardInterrupt``, ``SystemExit``).

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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..core.retry import retry_delay
from ..errors import OpTimeoutError
from .calls import bind
from .record import RunRecord

if TYPE_CHECKING:
    from ..core.node import Node
    from ..core.results import Results

__all__ = ["BATCH", "QUICK", "Loop", "Outcome", "Runner", "attempt"]

#: What running a node gives: (ok: True, False or None, its value or exception, seconds).
Outcome = tuple[bool | None, Any, float]

# Longest blocking wait: a thread blocked on a lock does not see
# _thread.interrupt_main(), nor Ctrl-C on Windows, until it wakes up.
_POLL = 0.1
#: Most nodes in one call of a runner's ``start_many``.
BATCH = 6
#: An op whose last run took less than this many seconds is quick: batched.
QUICK = 0.002

_AFTER_TIMEOUT = {
    True: "it was stopped",
    False: "it was abandoned: a thread cannot be stopped, so it runs on until the op returns",
}


class Runner(Protocol):
    """How an executor runs one node; see the module docstring."""

    slots: int
    stops_timeouts: bool  # whether an op past its timeout is stopped, or abandoned

    def start(self, node: Node[Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              report: Callable[[Outcome], None]) -> Outcome | None: ...

    # optional: start_many(calls: list of (node, args, kwargs, report)) -> list of
    # the exception that kept each from starting, or None; outcomes come by report.

    def cancel(self) -> None: ...

    def abandon(self, key: str) -> None: ...


def attempt(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
    """Call ``fn`` once, timing it; an ``Exception`` becomes a failed outcome."""
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return (False, exc, time.perf_counter() - start)
    return (True, result, time.perf_counter() - start)


def _timeout(node: Node[Any]) -> float | None:
    op = node._op
    return None if op is None else op.settings.timeout


class Loop:
    """One run of a record's graph on a runner; :meth:`go` returns its Results."""

    def __init__(self, record: RunRecord, runner: Runner):
        self.record: RunRecord = record
        self.runner: Runner = runner
        self.nodes: dict[str, Node[Any]] = record.nodes
        self.values: dict[str, Any] = record.values
        self.ready: list[tuple[int, int, str]] = []
        self.timers: list[tuple[float, int, str]] = []  # retries: (when, seq, key)
        self.deadlines: list[tuple[float, int, str, int]] = []  # (when, seq, key, attempt)
        self.seq: itertools.count[int] = itertools.count()
        self.done: queue.SimpleQueue[tuple[str, int, Outcome]] = queue.SimpleQueue()
        self.slots: int = max(1, runner.slots)
        self.calls: int = 0  # slots in use: each holds a node in flight, or a batch of them
        self.running: dict[str, int] = {}  # key -> the attempt in flight
        self.batch_left: dict[str, list[int]] = {}  # key -> [its batch's nodes in flight]
        # takes quick nodes in batches: [(node, args, kwargs, report)] -> [error or None]
        self.start_many: Callable[[list[tuple[Any, ...]]], list[BaseException | None]] | None = (
            getattr(runner, "start_many", None))
        self.quick: dict[int, bool] = {}  # id(op) -> its last run took under QUICK seconds
        self.ops: dict[int, tuple[int, float | None, Any]] = {}  # id(op) -> see op_info
        for node in record.ready():
            self.push(node)
        record.on_ready = self.push

    def op_info(self, node: Node[Any]) -> tuple[int, float | None, Any]:
        """``(priority, timeout, settings)`` of the node's op (``(0, None, None)``: data)."""
        op = node._op
        info = self.ops.get(id(op))
        if info is None:
            if op is None:
                info = (0, None, None)
            else:
                settings = op.settings
                info = (settings.priority, settings.timeout, settings)
            self.ops[id(op)] = info
        return info

    def push(self, node: Node[Any]) -> None:
        info = self.ops.get(id(node._op)) or self.op_info(node)
        heapq.heappush(self.ready, (-info[0], -next(self.seq), node._key))

    def go(self) -> Results:
        try:
            while True:
                self.dispatch()
                if self.running:
                    self.wait()
                elif self.timers and not self.record.stopping:
                    time.sleep(min(_POLL, max(0.0, self.timers[0][0] - time.monotonic())))
                elif not self.ready or self.record.stopping:
                    break
                self.retry_due()
        except BaseException:
            self.runner.cancel()
            raise
        return self.record.results()

    # -- starting -----------------------------------------------------------------------
    def dispatch(self) -> None:
        """Start ready nodes while there are free slots."""
        ready, record, nodes, values = self.ready, self.record, self.nodes, self.values
        start_many, slots, put = self.start_many, self.slots, self.done.put
        while ready and self.calls < slots and not record.stopping:
            key = heapq.heappop(ready)[2]
            if start_many is not None and self.batchable(key):
                keys = [key]
                size = min(BATCH, -(-(len(ready) + 1) // (slots - self.calls)))  # share them out
                while ready and len(keys) < size and self.batchable(ready[0][2]):
                    keys.append(heapq.heappop(ready)[2])
                if len(keys) > 1:
                    self.launch(keys)
                    continue
            node = nodes[key]
            number = record.started(key)
            args, kwargs = bind(node, values)
            if node._op is None:  # a data node: nothing to run
                outcome: Outcome | None = (True, args[0], 0.0)
            else:
                try:
                    # the defaults bind this node's key and number (a checker cannot type them)
                    outcome = self.runner.start(node, args, kwargs,
                                                lambda o, key=key, n=number: put((key, n, o)))  # type: ignore[misc]
                except Exception as exc:  # could not even start (e.g. not picklable)
                    record.failed(key, exc)
                    continue
            if outcome is not None:
                self.finish(key, outcome)
            else:
                self.running[key] = number
                self.calls += 1
                limit = (self.ops.get(id(node._op)) or self.op_info(node))[1]
                if limit is not None:
                    heapq.heappush(self.deadlines,
                                   (time.monotonic() + limit, next(self.seq), key, number))

    def batchable(self, key: str) -> bool:
        op = self.nodes[key]._op
        return op is not None and self.quick.get(id(op), False) and op.settings.timeout is None

    def reporter(self, key: str, number: int) -> Callable[[Outcome], None]:
        put = self.done.put
        return lambda outcome: put((key, number, outcome))

    def launch(self, keys: list[str]) -> None:
        """Start quick nodes in one call of the runner's ``start_many``."""
        record, nodes, values = self.record, self.nodes, self.values
        begun = [(key, nodes[key], record.started(key), *bind(nodes[key], values))
                 for key in keys]
        # only a runner with start_many launches
        errors = self.start_many([(node, args, kwargs, self.reporter(key, number))  # type: ignore[misc]
                                  for key, node, number, args, kwargs in begun])
        left = [0]
        for (key, _, number, _, _), error in zip(begun, errors):
            if error is None:
                self.running[key] = number
                self.batch_left[key] = left
                left[0] += 1
            else:  # could not even start (e.g. not picklable)
                self.record.failed(key, error)
        self.calls += bool(left[0])

    # -- ending -------------------------------------------------------------------------
    def wait(self) -> None:
        """Take one outcome (waiting until the next retry or deadline at most); expire
        the nodes past their deadlines."""
        wait = _POLL
        for heap in ((self.timers,) if self.record.stopping else (self.timers, self.deadlines)):
            if heap:
                wait = min(wait, max(0.0, heap[0][0] - time.monotonic()))
        try:
            key, number, outcome = self.done.get(timeout=wait)
        except queue.Empty:
            pass
        else:
            if self.running.get(key) == number:  # else: abandoned at its deadline
                self.free(key)
                self.finish(key, outcome)
        now = time.monotonic()
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, key, number = heapq.heappop(deadlines)
            if self.running.get(key) == number:
                self.free(key)
                self.runner.abandon(key)
                limit = self.op_info(self.nodes[key])[1]
                error = OpTimeoutError(
                    f"node {key!r} ran longer than its timeout of {limit:g} s; "
                    + _AFTER_TIMEOUT[self.runner.stops_timeouts])
                self.finish(key, (False, error, limit))  # type: ignore[arg-type]  # limit is set

    def free(self, key: str) -> None:
        """``key`` is no longer in flight: its slot is free (its batch's, once all are)."""
        del self.running[key]
        left = self.batch_left.pop(key, None)
        if left is not None:
            left[0] -= 1
            if left[0]:
                return
        self.calls -= 1

    def finish(self, key: str, outcome: Outcome) -> None:
        """Hand an outcome to the record, or retry the node after its delay."""
        ok, result, seconds = outcome
        node = self.nodes[key]
        limit = (self.ops.get(id(node._op)) or self.op_info(node))[1]
        if ok and limit is not None and seconds > limit:  # ran in-line, past its limit
            ok, result = False, OpTimeoutError(
                f"node {key!r} ran {seconds:.3g} s, longer than its timeout of {limit:g} s")
        if ok:
            if self.start_many is not None and node._op is not None:
                self.quick[id(node._op)] = seconds < QUICK
            self.record.finished(key, seconds, result)  # pushes what became ready
            return
        if ok is None:
            raise result
        delay = retry_delay(self.op_info(node)[2], result, self.record.attempts[key])
        if delay is None:
            self.record.failed(key, result, seconds)
        elif delay:
            heapq.heappush(self.timers, (time.monotonic() + delay, next(self.seq), key))
        else:
            self.push(node)

    def retry_due(self) -> None:
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now and not self.record.stopping:
            self.push(self.nodes[heapq.heappop(timers)[2]])
