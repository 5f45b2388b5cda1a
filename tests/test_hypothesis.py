"""Random DAGs give the same values on every local executor as on SyncExecutor.

Node i depends only on nodes before it. Ops are pure arithmetic on their
inputs, which arrive bare, in lists, in dicts of tuples and by keyword; some
nodes are data nodes. Every op node logs its label to a file, so "runs
exactly once" is checked on process executors too.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdispatch as fd
from flowdispatch.testing import append_line as _log

MOD = 1_000_003



def plus_value(label, xs):
    return (sum(xs) + label) % MOD


def times_value(label, xs):
    out = label + 1
    for x in xs:
        out = out * (x % 97 + 1) % MOD
    return out


def mix_value(label, first, rest):
    return (3 * first - sum(rest) + label) % MOD


@fd.op
def plus(log, label, *xs):
    _log(log, label)
    return plus_value(label, xs)


@fd.op
def times(log, label, xs):
    _log(log, label)
    return times_value(label, xs)


@fd.op
def mix(log, label, pair):
    _log(log, label)
    return mix_value(label, pair["first"], pair["rest"])


@fd.op
def keyed(log, label, *, first, **rest):
    _log(log, label)
    return mix_value(label, first, [rest[k] for k in sorted(rest)])


KINDS = ("value", "plus", "times", "mix", "keyed")


@st.composite
def dags(draw):
    """A list of (kind, constant, dependency indices), node i depending on nodes < i."""
    size = draw(st.integers(1, 14))
    spec = []
    for i in range(size):
        kind = "value" if i == 0 else draw(st.sampled_from(KINDS))
        deps = [] if kind == "value" else draw(
            st.lists(st.integers(0, i - 1), min_size=1 if kind != "plus" else 0, max_size=3))
        spec.append((kind, draw(st.integers(0, 50)), deps))
    return spec


def build(spec, log):
    """The nodes of ``spec`` (one per entry)."""
    nodes = []
    for label, (kind, const, deps) in enumerate(spec):
        inputs = [nodes[d] for d in deps]
        if kind == "value":
            nodes.append(fd.value(const, name=f"v{label}"))
        elif kind == "plus":
            nodes.append(plus(log, label, const, *inputs))
        elif kind == "times":
            nodes.append(times(log, label, [const, *inputs]))
        elif kind == "mix":
            nodes.append(mix(log, label, {"first": inputs[0], "rest": (const, *inputs[1:])}))
        else:
            nodes.append(keyed(log, label, first=inputs[0], c=const,
                               **{f"x{j}": x for j, x in enumerate(inputs[1:])}))
    return nodes


def evaluate(spec):
    """The values of ``spec``'s nodes in plain Python: what every executor must give."""
    values = []
    for label, (kind, const, deps) in enumerate(spec):
        inputs = [values[d] for d in deps]
        if kind == "value":
            values.append(const)
        elif kind == "plus":
            values.append(plus_value(label, [const, *inputs]))
        elif kind == "times":
            values.append(times_value(label, [const, *inputs]))
        elif kind == "mix":
            values.append(mix_value(label, inputs[0], [const, *inputs[1:]]))
        else:
            rest = {"c": const, **{f"x{j}": x for j, x in enumerate(inputs[1:])}}
            values.append(mix_value(label, inputs[0], [rest[k] for k in sorted(rest)]))
    return values


@contextlib.contextmanager
def _pool_executor():
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        yield fd.PoolExecutor(pool)


EXECUTORS = {
    "sync": (fd.SyncExecutor, 50),
    "threads": (lambda: fd.ThreadExecutor(max_workers=4), 50),
    "pool": (_pool_executor, 30),
    "processes": (lambda: fd.ProcessExecutor(max_workers=2), 30),
}


def _check(spec, name, executor, sync):
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log")
        nodes = build(spec, log)
        res = fd.run(*nodes, executor=executor)
        assert res.ok, res.counts
        got = [res[node] for node in nodes]
        assert got == evaluate(spec)
        runs = collections.Counter()
        if os.path.exists(log):
            with open(log) as f:
                runs.update(int(line) for line in f.read().split())
        ops = [i for i, (kind, _, _) in enumerate(spec) if kind != "value"]
        assert runs == collections.Counter(ops), f"{name}: every op node runs once"
        reference = fd.run(*nodes, executor=sync)
        assert [reference[node] for node in nodes] == got
        sinks = [n for n in nodes if not fd.Graph(*nodes).dependents(n)]
        assert fd.compute({"sinks": sinks}, executor=executor) == (
            {"sinks": [res[n] for n in sinks]},)


@pytest.mark.parametrize("name", list(EXECUTORS))
def test_random_dags_agree_with_sync(name):
    factory, examples = EXECUTORS[name]
    sync = fd.SyncExecutor()
    with factory() as executor:
        @settings(max_examples=examples, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(spec=dags())
        def check(spec):
            _check(spec, name, executor, sync)

        check()


def test_evaluate_is_a_real_reference():
    spec = [("value", 5, []), ("plus", 1, [0, 0]), ("times", 2, [1]), ("mix", 3, [2, 0]),
            ("keyed", 4, [3, 1])]
    assert evaluate(spec) == [5, 12, 117, 346, 1026]
    with tempfile.TemporaryDirectory() as tmp:
        nodes = build(spec, os.path.join(tmp, "log"))
        assert fd.compute(nodes, executor="sync") == ([5, 12, 117, 346, 1026],)
