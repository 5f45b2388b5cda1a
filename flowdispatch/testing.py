"""Conformance checks: the behaviour every executor must have, ours and third parties'.

:func:`check_executor` runs a list of named checks, each a few small graphs,
against executors made by a factory and raises one ``AssertionError`` naming
every check that failed. The ops used here live at module level, so they
pickle by reference and run on process- and cluster-based executors too; they
count their runs by appending lines to files in a temporary directory, which
works across processes. Waits are bounded: no check can hang on a correct
executor.

Examples
--------
>>> import flowdispatch as fd
>>> from flowdispatch.testing import check_executor
>>> check_executor(fd.SyncExecutor)
>>> sorted(CHECKS)[:3]
['cache', 'callbacks', 'close']
"""

from __future__ import annotations

import collections
import dataclasses
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from . import config
from .api import compute, run
from .core.graph import Graph
from .core.node import collect, value
from .core.op import op, unmapped
from .errors import UpstreamError

__all__ = ["CHECKS", "PlantedError", "append_line", "check_executor", "read_lines",
           "stop_process_trees"]


class PlantedError(ValueError):
    """The error the checks' ops raise on purpose."""


@dataclasses.dataclass(frozen=True)
class Pair:
    """A dataclass that holds nodes in the containers check."""

    left: Any
    right: Any


class Point(NamedTuple):
    """A namedtuple of nodes (the traversal checks look inside it)."""

    x: Any
    y: Any


# -- side effects that work across processes ------------------------------------------

def append_line(log: str, line: str) -> None:
    """Append ``line`` to the file ``log`` in one write: a side effect that ops in
    other processes (process pools, dask workers) can leave and a test can count."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def read_lines(log: str) -> list[str]:
    """The lines of ``log`` so far (none if it does not exist yet)."""
    try:
        with open(log) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def stop_process_trees(processes: Collection[Any], timeout: float) -> None:
    """Stop child processes (``subprocess.Popen``) and everything they started: terminate
    them, wait up to ``timeout`` seconds for them and their descendants to exit, kill
    what is left, and reap them. Needs ``psutil``.

    A dask nanny, say, stops its worker when it is terminated; a descendant that
    outlives the wait is killed.
    """
    import contextlib
    import subprocess

    import psutil

    tree = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(process.pid)
            tree.extend([parent, *parent.children(recursive=True)])
        if process.poll() is None:
            process.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)


def _runs(log: str) -> collections.Counter[str]:
    """How many times each label started, from ``start <label>`` lines."""
    return collections.Counter(
        line.split(" ", 1)[1] for line in read_lines(log) if line.startswith("start ")
    )


# -- the ops ----------------------------------------------------------------------------

@op
def inc(x: int) -> int:
    return x + 1


@op
def double(x: int) -> int:
    return 2 * x


@op
def add(x: int, y: int) -> int:
    return x + y


@op
def echo(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
    return args, kwargs


@op
def keywords(a: int, /, b: int, *, c: int, **rest: int) -> tuple[Any, ...]:
    return a, b, c, sorted(rest.items())


@op(nout=2)
def div_mod(x: int, y: int) -> tuple[int, int]:
    return divmod(x, y)


@op(pure=True)
def square(log: str, x: int) -> int:
    append_line(log, f"start square {x}")
    return x * x


@op(cache=True)
def cached_square(log: str, x: int) -> int:
    append_line(log, f"start cached_square {x}")
    return x * x


@op
def length(x: Any) -> int:
    return len(x)


@op
def total(xs: list[Any]) -> int:
    return sum(xs)


@op
def record(log: str, label: str, *deps: Any) -> str:
    """Log ``start <label>`` and ``end <label>``; return the label."""
    append_line(log, f"start {label}")
    append_line(log, f"end {label}")
    return label


@op
def fail(log: str, label: str, *deps: Any) -> None:
    append_line(log, f"start {label}")
    raise PlantedError(f"{label} failed on purpose")


def _failures_left(log: str, label: str, failures: int) -> bool:
    append_line(log, f"start {label}")
    return _runs(log)[label] <= failures


@op
def flaky(log: str, label: str, failures: int, error: str = "OSError") -> str:
    """Raise ``error`` on the first ``failures`` attempts (counted in ``log``)."""
    if _failures_left(log, label, failures):
        exc_type = {"OSError": OSError, "PlantedError": PlantedError}[error]
        raise exc_type(f"{label}: transient failure")
    return label


@op
def countdown(n: int) -> Any:
    """Return the node of ``countdown(n - 1)``, down to ``"liftoff"``: a recursion."""
    return countdown(n - 1) if n else "liftoff"


@op
def labels(log: str, count: int) -> list[str]:
    """Log ``start labels``; return ``count`` labels, known only when it has run."""
    append_line(log, "start labels")
    return [f"item{i}" for i in range(count)]


@op
def wait_for(path: str, timeout: float = 5.0) -> bool:
    """Return once ``path`` exists (True) or after ``timeout`` seconds (False)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def is_transient(error: BaseException) -> bool:
    """A ``retry_on`` predicate: retry errors whose message says 'transient'."""
    return "transient" in str(error)


def never(error: BaseException) -> bool:
    """A ``retry_on`` predicate that allows no retry."""
    return False


# -- helpers ----------------------------------------------------------------------------

def _expect(what: str, got: Any, expected: Any) -> None:
    if got != expected:
        if isinstance(got, dict) and isinstance(expected, dict):  # show in a stable order
            got, expected = dict(sorted(got.items())), dict(sorted(expected.items()))
        raise AssertionError(f"{what}: expected {expected!r}, got {got!r}")


def _expect_true(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _states(res: Any, nodes: dict[str, Any]) -> dict[str, Any]:
    return {label: res.state(node) for label, node in nodes.items()}


def _has_key_note(error: BaseException | None, key: str) -> bool:
    return any(key in note for note in getattr(error, "__notes__", ()))


# -- the checks -------------------------------------------------------------------------

def check_diamond(executor: Any, tmp: str) -> None:
    """A diamond (a -> b, a -> c, b + c -> d) and lazy operators give the right values."""
    a = inc(1)
    b = double(a)
    c = inc(a)
    d = add(b, c)
    _expect("compute(a, b, c, d)", compute(a, b, c, d, executor=executor), (2, 4, 3, 7))
    _expect("compute((d + 1) * 2 - a)", compute((d + 1) * 2 - a, executor=executor), (14,))
    _expect("compute of a dict of nodes", compute({"x": a, "y": [b, c]}, executor=executor),
            ({"x": 2, "y": [4, 3]},))


def check_containers(executor: Any, tmp: str) -> None:
    """Nodes inside lists, tuples, dicts, sets, dataclasses and namedtuples are replaced."""
    a, b, c = inc(0), inc(1), inc(2)
    node = echo([a, (b, [c])], {"k": {"n": a}}, {b}, frozenset({c}), Pair(a, [b]),
                Point(x=c, y={"k": a}), kw=[Pair(b, c)], nt=Point(a, (b,)))
    expected = (
        ([1, (2, [3])], {"k": {"n": 1}}, {2}, frozenset({3}), Pair(1, [2]),
         Point(x=3, y={"k": 1})),
        {"kw": [Pair(2, 3)], "nt": Point(1, (2,))},
    )
    (got,) = compute(node, executor=executor)
    _expect("echo(nested containers of nodes)", got, expected)
    _expect("type of a namedtuple argument", type(got[0][5]), Point)
    _expect("type of a dataclass argument", type(got[0][4]), Pair)


def check_once(executor: Any, tmp: str) -> None:
    """Each node runs exactly once per run; a shared ancestor too; the graph is unchanged."""
    log = os.path.join(tmp, "log")
    root = record(log, "root")
    left = record(log, "left", root)
    right = record(log, "right", root)
    top = record(log, "top", left, right)
    graph = Graph(top, left)
    res = run(top, left, executor=executor)
    _expect("states", _states(res, {"top": top, "left": left}), {"top": "done", "left": "done"})
    _expect("runs after one run", dict(_runs(log)),
            {"root": 1, "left": 1, "right": 1, "top": 1})
    res = run(top, left, executor=executor)
    _expect("runs after two runs", dict(_runs(log)),
            {"root": 2, "left": 2, "right": 2, "top": 2})
    _expect_true(Graph(top, left) == graph, "running a graph changed it")


def check_order(executor: Any, tmp: str) -> None:
    """A node starts only after every one of its dependencies has ended."""
    log = os.path.join(tmp, "log")
    layer = [record(log, f"n0.{i}") for i in range(4)]
    nodes = list(layer)
    for depth in range(1, 4):
        layer = [record(log, f"n{depth}.{i}", layer[i], layer[(i + 1) % 4]) for i in range(4)]
        nodes.extend(layer)
    res = run(layer, executor=executor)
    _expect_true(res.ok, f"not every node completed: {res.counts}")
    position = {line: i for i, line in enumerate(read_lines(log))}
    for node in nodes:
        label = node.args[1]
        for dep in node.dependencies:
            dep_label = dep.args[1]
            _expect_true(
                position.get(f"end {dep_label}", 1e9) < position.get(f"start {label}", -1),
                f"{label} started before its dependency {dep_label} ended "
                f"(log: {read_lines(log)})",
            )


def check_failure(executor: Any, tmp: str) -> None:
    """A failing op is ``failed`` with its own error; dependents ``upstream_failed``."""
    log = os.path.join(tmp, "log")
    root = record(log, "root")
    bad = fail(log, "bad", root)
    child = record(log, "child", bad)
    grandchild = record(log, "grandchild", child, root)
    other = record(log, "other", root)
    res = run(grandchild, other, executor=executor)
    _expect("states", _states(res, {"root": root, "bad": bad, "child": child,
                                    "grandchild": grandchild, "other": other}),
            {"root": "done", "bad": "failed", "child": "upstream_failed",
             "grandchild": "upstream_failed", "other": "done"})
    _expect("res.ok", res.ok, False)
    _expect("res.failed", res.failed, (bad,))
    error = res.error(bad)
    _expect("type of error(bad)", type(error), PlantedError)
    _expect("message of error(bad)", str(error), "bad failed on purpose")
    _expect_true(_has_key_note(error, bad.key),
                 f"the error has no note naming the node {bad.key!r}: "
                 f"{getattr(error, '__notes__', None)!r}")
    for label, node in (("child", child), ("grandchild", grandchild)):
        up = res.error(node)
        if not isinstance(up, UpstreamError):
            raise AssertionError(f"error({label}): expected an fd.UpstreamError, got {up!r}")
        _expect(f"error({label}).upstream", up.upstream, bad.key)
    try:
        res[bad]
    except PlantedError:
        pass
    except BaseException as exc:  # noqa: BLE001 - reported, not hidden
        raise AssertionError(f"res[bad]: expected PlantedError, got {exc!r}") from exc
    else:
        raise AssertionError("res[bad] did not raise")
    _expect("res[other]", res[other], "other")
    _expect("runs", dict(_runs(log)), {"root": 1, "bad": 1, "other": 1})


def check_compute_raises(executor: Any, tmp: str) -> None:
    """``fd.compute`` raises the op's own exception, with a note naming the node."""
    log = os.path.join(tmp, "log")
    bad = fail(log, "bad")
    try:
        compute(inc(bad), executor=executor)
    except PlantedError as exc:
        _expect_true(_has_key_note(exc, bad.key),
                     f"the error has no note naming {bad.key!r}: "
                     f"{getattr(exc, '__notes__', None)!r}")
    except BaseException as exc:  # noqa: BLE001
        raise AssertionError(f"expected PlantedError, got {exc!r}") from exc
    else:
        raise AssertionError("compute() of a failing op did not raise")


def check_overrides(executor: Any, tmp: str) -> None:
    """An override's value is used (even one that differs), and its ancestors do not run."""
    log = os.path.join(tmp, "log")
    a = record(log, "a")
    b = add(inc(1), double(length(a)))
    res = run(b, executor=executor, overrides={a: "overridden"})
    _expect("value computed from the override", res[b], 2 + 2 * len("overridden"))
    _expect("state of the overridden node", res.state(a), "skipped")
    _expect("runs", dict(_runs(log)), {})
    mid = length(record(log, "upstream"))
    top = add(mid, 1000)
    res = run(top, executor=executor, overrides={mid: 5})
    _expect("value with an overridden middle node", res[top], 1005)
    _expect("runs", dict(_runs(log)), {})


def check_retries(executor: Any, tmp: str) -> None:
    """retries=k: k failures then success take exactly k+1 attempts; k+1 failures fail."""
    log = os.path.join(tmp, "log")
    nodes = {}
    for k in (0, 1, 3):
        nodes[f"ok{k}"] = flaky.options(retries=k)(log, f"ok{k}", k)
    nodes["bad2"] = flaky.options(retries=2)(log, "bad2", 3)
    nodes["delayed"] = flaky.options(retries=2, retry_delay=0.01, backoff=2.0)(log, "delayed", 2)
    after_bad = record(log, "after_bad", nodes["bad2"])
    res = run(list(nodes.values()), after_bad, executor=executor)
    _expect("states", _states(res, {**nodes, "after_bad": after_bad}),
            {"ok0": "done", "ok1": "done", "ok3": "done", "bad2": "failed",
             "delayed": "done", "after_bad": "upstream_failed"})
    _expect("attempts (counted by the op)", dict(_runs(log)),
            {"ok0": 1, "ok1": 2, "ok3": 4, "bad2": 3, "delayed": 3})
    _expect("res.attempts", {label: res.attempts(n) for label, n in nodes.items()},
            {"ok0": 1, "ok1": 2, "ok3": 4, "bad2": 3, "delayed": 3})
    _expect("res[ok3]", res[nodes["ok3"]], "ok3")
    error = res.error(nodes["bad2"])
    _expect_true(isinstance(error, OSError) and "bad2: transient" in str(error),
                 f"error(bad2): expected the last OSError, got {error!r}")


def check_retry_on(executor: Any, tmp: str) -> None:
    """retry_on limits retries to matching errors: types, or a predicate."""
    log = os.path.join(tmp, "log")
    only_os = flaky.options(retries=3, retry_on=(OSError,))
    nodes = {
        "os_error": only_os(log, "os_error", 1),
        "value_error": only_os(log, "value_error", 1, error="PlantedError"),
        "predicate": flaky.options(retries=3, retry_on=is_transient)(
            log, "predicate", 2, error="PlantedError"),
        "predicate_no": flaky.options(retries=3, retry_on=never)(
            log, "predicate_no", 1),
    }
    res = run(list(nodes.values()), executor=executor)
    _expect("states", _states(res, nodes),
            {"os_error": "done", "value_error": "failed", "predicate": "done",
             "predicate_no": "failed"})
    _expect("attempts (counted by the op)", dict(_runs(log)),
            {"os_error": 2, "value_error": 1, "predicate": 3, "predicate_no": 1})
    _expect("type of error(value_error)", type(res.error(nodes["value_error"])), PlantedError)


def check_fail_fast(executor: Any, tmp: str) -> None:
    """With ``fail_fast=True``, nothing starts after a failure: the rest is ``cancelled``."""
    log = os.path.join(tmp, "log")
    marker = os.path.join(tmp, "failed")

    class Mark:
        def on_node_error(self, *, node: Any, error: BaseException) -> None:
            append_line(marker, node.key)

    bad = fail.options(priority=10)(log, "bad")
    gate = wait_for(marker)
    after = record(log, "after", gate)
    res = executor.run(Graph(bad, gate, after), fail_fast=True, callbacks=[Mark()])
    _expect("state of the failing node", res.state(bad), "failed")
    _expect_true(res.state(gate) in ("done", "cancelled"),
                 f"state of the node running during the failure: expected done or "
                 f"cancelled, got {res.state(gate)!r}")
    if res.state(gate) == "done":
        _expect_true(res[gate], "the node waiting for on_node_error timed out")
    _expect("state of a node after the failure", res.state(after), "cancelled")
    _expect("runs", dict(_runs(log)), {"bad": 1})


def check_rerun(executor: Any, tmp: str) -> None:
    """``res.rerun()`` runs only what did not complete, reusing the values that did."""
    log = os.path.join(tmp, "log")
    a = record(log, "a")
    b = flaky(log, "b", 1, a)
    c = record(log, "c", b)
    d = record(log, "d")
    res = run(c, d, executor=executor)
    _expect("states of the first run", _states(res, {"a": a, "b": b, "c": c, "d": d}),
            {"a": "done", "b": "failed", "c": "upstream_failed", "d": "done"})
    again = res.rerun(executor=executor)
    _expect("states after rerun", _states(again, {"a": a, "b": b, "c": c, "d": d}),
            {"a": "done", "b": "done", "c": "done", "d": "done"})
    _expect("values after rerun", (again[c], again[d]), ("c", "d"))
    _expect("runs", dict(_runs(log)), {"a": 1, "b": 2, "c": 1, "d": 1})
    _expect("attempts of b over both runs", again.attempts(b), 2)


def check_callbacks(executor: Any, tmp: str) -> None:
    """on_start, on_node_start, on_node_finish, on_node_error and on_finish are called."""
    log = os.path.join(tmp, "log")
    events: list[tuple[Any, ...]] = []
    lock = threading.Lock()

    class Recorder:
        def on_start(self, *, graph: Any) -> None:
            with lock:
                events.append(("start", len(graph)))

        def on_node_start(self, *, node: Any, attempt: int) -> None:
            with lock:
                events.append(("node_start", node.key, attempt))

        def on_node_finish(self, *, node: Any, duration: float) -> None:
            with lock:
                events.append(("node_finish", node.key, duration >= 0))

        def on_node_error(self, *, node: Any, error: BaseException) -> None:
            with lock:
                events.append(("node_error", node.key, type(error).__name__))

        def on_node_upstream_failed(self, *, node: Any, error: UpstreamError) -> None:
            with lock:
                events.append(("node_upstream_failed", node.key, error.upstream))

    class Finisher(Recorder):
        def on_finish(self, *, results: Any) -> None:
            with lock:
                events.append(("finish", results.counts.get("done")))

    a = inc(1)
    b = double(a)
    bad = fail(log, "bad")
    below = inc(bad)
    run(b, below, executor=executor, callbacks=[Finisher()])
    _expect("first event", events[:1], [("start", 4)])
    _expect("last event", events[-1:], [("finish", 2)])
    finished = sorted(e[1] for e in events if e[0] == "node_finish")
    _expect("nodes passed to on_node_finish", finished, sorted([a.key, b.key]))
    _expect_true(all(e[2] for e in events if e[0] == "node_finish"),
                 f"a negative duration in {events}")
    _expect("on_node_error calls", [e for e in events if e[0] == "node_error"],
            [("node_error", bad.key, "PlantedError")])
    _expect("on_node_upstream_failed calls", [e for e in events if e[0] == "node_upstream_failed"],
            [("node_upstream_failed", below.key, bad.key)])
    started = sorted(e[1] for e in events if e[0] == "node_start")
    _expect("nodes passed to on_node_start", started, sorted([a.key, b.key, bad.key]))
    _expect_true(events.index(("node_start", a.key, 1)) < events.index(("node_start", b.key, 1)),
                 f"b started before a: {events}")


def check_cache(executor: Any, tmp: str) -> None:
    """``cache=True``: a value is saved where its node completes and found again by the
    next run (``"cached"``), which neither runs the op nor its ancestors."""
    log = os.path.join(tmp, "log")
    with config.set(cache_dir=os.path.join(tmp, "cache")):
        first = inc(cached_square(log, inc(2)))
        res = run(first, executor=executor)
        _expect("first run", (res[first], res.state(first.dependencies[0])), (10, "done"))
        again = inc(cached_square(log, inc(2)))
        res = run(again, executor=executor)
        square_node = again.dependencies[0]
        _expect("second run", (res[again], res.state(square_node)), (10, "cached"))
    _expect("runs of the cached op", dict(_runs(log)), {"cached_square 3": 1})


def check_nout(executor: Any, tmp: str) -> None:
    """A node of an op with ``nout=2`` unpacks into two nodes; ``node[i]`` is lazy too."""
    q, r = div_mod(inc(16), 5)
    pair = div_mod(23, 4)
    _expect("compute(q, r, pair, pair[1])", compute(q, r, pair, pair[1], executor=executor),
            (3, 2, (5, 3), 3))


def check_data_nodes(executor: Any, tmp: str) -> None:
    """``fd.value`` data nodes and ``fd.collect`` give their values."""
    rows = value([3, 1, 2], name="rows")
    nums = value(10)
    both = collect([inc(nums), rows, double(nums)])
    _expect("compute(rows, both, total(rows))",
            compute(rows, both, total(rows), executor=executor),
            ([3, 1, 2], [11, [3, 1, 2], 20], 6))
    _expect("compute(collect([]))", compute(collect([]), executor=executor), ([],))


def check_kwargs(executor: Any, tmp: str) -> None:
    """Nodes passed by keyword (keyword-only and ``**kwargs`` too) become their values."""
    one = inc(0)
    node = keywords(one, b=inc(one), c=inc(inc(one)), z=value(26), y=double(one))
    _expect("keywords(...)", compute(node, executor=executor), ((1, 2, 3, [("y", 2), ("z", 26)]),))


def check_pure(executor: Any, tmp: str) -> None:
    """Calls of a ``pure=True`` op with equal arguments are one node, run once."""
    log = os.path.join(tmp, "log")
    first, second = square(log, 3), square(log, 3)
    _expect("keys of two equal pure calls", first.key, second.key)
    node = add(first, second)
    res = run(node, executor=executor)
    _expect("value", res[node], 18)
    _expect("graph size", len(res.graph), 2)
    _expect("runs", dict(_runs(log)), {"square 3": 1})


def check_fan_out(executor: Any, tmp: str) -> None:
    """200 independent nodes gathered by one: all run, the sum is right."""
    leaves = [inc(i) for i in range(200)]
    _expect("sum", compute(total(collect(leaves)), executor=executor), (sum(range(1, 201)),))


def check_expand(executor: Any, tmp: str) -> None:
    """An op that returns nodes expands (recursion); a map over a node makes one node
    per element at run time; a failing child fails its parent upstream, and a rerun
    runs only the failed children, not the ops that expanded."""
    res = run(countdown(3), executor=executor)
    _expect("value of a recursion", res[res.targets[0]], "liftoff")
    _expect("nodes of a recursion", (len(res), res.counts), (4, {"done": 4}))
    log = os.path.join(tmp, "log")
    items = labels(log, 3)
    mapped = flaky.map(unmapped(log), items, [1, 0, 1])  # item0 and item2 fail their first run
    res = run(mapped, executor=executor)
    children = res.children(mapped)
    _expect("children", [c.args[1] for c in children], ["item0", "item1", "item2"])
    _expect("states of the children", [res.state(c) for c in children],
            ["failed", "done", "failed"])
    _expect("state of the map", res.state(mapped), "upstream_failed")
    again = res.rerun(executor=executor)
    _expect("value after rerun", again[mapped], ["item0", "item1", "item2"])
    _expect("runs", dict(_runs(log)), {"labels": 1, "item0": 2, "item1": 1, "item2": 2})


def check_close(factory: Callable[[], Any]) -> None:
    """A fresh executor works as a context manager, and ``close()`` twice is safe.

    Unlike the other checks, this one takes the factory: it needs its own executor.
    """
    executor = factory()
    with executor as entered:
        _expect_true(entered is executor, "__enter__ did not return the executor")
        _expect("compute in a with block", compute(add(inc(1), 2), executor=executor), (4,))
    executor.close()  # a second close must be safe


#: The checks by name: each takes an executor and a temporary directory (``close``
#: takes the factory instead).
CHECKS: dict[str, Callable[..., None]] = {
    name[len("check_"):]: fn for name, fn in sorted(globals().items())
    if name.startswith("check_") and name != "check_executor"
}


def check_executor(factory: Callable[[], Any], *, skip: Collection[str] = ()) -> None:
    """Check that the executors ``factory()`` makes keep flowdispatch's executor contract.

    Runs every check in :data:`CHECKS` (except those named in ``skip``) on one
    executor from ``factory``, then closes it; the ``close`` check makes a
    second one. Each check builds a few small graphs; together they take about
    a second on a local executor.

    Parameters
    ----------
    factory
        A callable that returns a fresh :class:`~flowdispatch.Executor`, such as
        the executor class itself or ``lambda: MyExecutor(workers=2)``.
    skip
        Names of checks not to run (for an executor that documents why it
        cannot keep that part of the contract).

    Raises
    ------
    AssertionError
        Naming each check that failed, with what was expected and what happened.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> from flowdispatch.testing import check_executor
    >>> check_executor(lambda: fd.ThreadExecutor(max_workers=2))

    A broken executor fails, with the names of the checks it broke:

    >>> class Twice(fd.SyncExecutor):
    ...     def start(self, node, args, kwargs, report):
    ...         super().start(node, args, kwargs, report)
    ...         return super().start(node, args, kwargs, report)  # runs every node twice
    >>> check_executor(Twice)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: Twice failed 9 of 20 conformance checks:
    - cache: runs of the cached op: expected {'cached_square 3': 1}, got {'cached_square 3': 2}
    - expand: states of the children: expected ['failed', 'done', 'failed'], got ['done', ...]
    - fail_fast: runs: expected {'bad': 1}, got {'bad': 2}
    - failure: runs: expected {'bad': 1, 'other': 1, 'root': 1}, got {'bad': 2, ...}
    ...
    """
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f"skip: unknown checks {unknown}; expected some of {sorted(CHECKS)}")
    failures: list[str] = []
    executor = factory()
    name = type(executor).__name__
    chosen = [check for check in CHECKS if check not in skip]
    try:
        for check in chosen:
            with tempfile.TemporaryDirectory(prefix=f"fd-check-{check}-") as tmp:
                try:
                    if check == "close":
                        check_close(factory)
                    else:
                        CHECKS[check](executor, tmp)
                except AssertionError as exc:
                    failures.append(f"- {check}: {exc}")
                except Exception as exc:  # noqa: BLE001 - a crash is a failed check too
                    where = "".join(traceback.format_exception(exc)[-3:]).rstrip()
                    failures.append(f"- {check}: raised {exc!r}\n{where}")
    finally:
        executor.close()
    if failures:
        raise AssertionError(
            f"{name} failed {len(failures)} of {len(chosen)} conformance checks:\n"
            + "\n".join(failures)
        )
