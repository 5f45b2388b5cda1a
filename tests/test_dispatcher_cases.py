"""Dispatcher.jl's own tested behaviours (test/runtests.jl), in Python, on every local executor.

Cases from Dispatcher.jl's own test suite. Side effects are counted in
files, so they are seen from worker processes too.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import math
import operator
import random
import time

import networkx as nx
import pytest

import flowdispatch as fd
from flowdispatch.testing import append_line as _log, read_lines as _lines
from workloads import DASK_CLUSTER_RESULT, dask_cluster, dask_do


@contextlib.contextmanager
def _pool_executor():
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        yield fd.PoolExecutor(pool)


EXECUTORS = {
    "sync": fd.SyncExecutor,
    "threads": lambda: fd.ThreadExecutor(max_workers=4),
    "processes": lambda: fd.ProcessExecutor(max_workers=2),
    "pool": _pool_executor,
}


@pytest.fixture(scope="module", params=sorted(EXECUTORS))
def executor(request):
    with EXECUTORS[request.param]() as made:
        yield made




# -- "Macros": what an op call records -------------------------------------------------------

def test_an_op_call_records_its_function_and_arguments():
    node = fd.op(sum)([4])
    assert (node.op.fn, node.args, node.kwargs) == (sum, ([4],), {})
    assert len(fd.Graph(node)) == 1


def test_keyword_arguments_are_recorded_as_keywords():
    node = fd.op(str.split)("foo bar", maxsplit=1)
    assert (node.args, node.kwargs) == (("foo bar",), {"maxsplit": 1})
    assert node.compute(executor="sync") == ["foo", "bar"]


def test_a_type_as_the_callee():
    node = fd.op(int)(2.0)
    assert node.op.fn is int
    assert node.compute(executor="sync") == 2


@pytest.mark.parametrize("thing", [3, True, [1, 2]])
def test_non_callables_are_not_ops(thing):
    with pytest.raises(TypeError, match=r"fd.op expected a callable"):
        fd.op(thing)


# -- the "Example" graph ------------------------------------------------------------------

@fd.op
def identity(x):
    return x


@fd.op
def logged_sqrt(log, x):
    _log(log, "d")
    return math.sqrt(x)


@fd.op(nout=2)
def factorials(c):
    return math.factorial(c), math.factorial(2 * c)


@fd.op
def failing_factorials(c):
    raise ArithmeticError(f"no factorials of {c} today")


@fd.op
def put(log, x):
    _log(log, repr(x))
    return x


def example(log, make_e=factorials):
    a = fd.value(3, name="a")
    b = identity(4)
    c = fd.op(max)(a, b)
    d = logged_sqrt(log, c)
    e = make_e(c)
    f, g = e[0], e[1]  # failing_factorials has no nout to unpack with
    h = put(log, g / 2)
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f, "g": g, "h": h}


def test_example_dependencies(tmp_path):
    n = example(str(tmp_path / "log"))
    assert n["a"].dependencies == ()
    assert n["b"].dependencies == ()
    assert n["c"].dependencies == (n["a"], n["b"])
    assert n["d"].dependencies == (n["c"],)
    assert n["e"].dependencies == (n["c"],)
    assert n["h"].dependencies[0].dependencies == (n["g"],)  # h = put(log, g / 2)


def test_example_runs_h_once_and_never_d(executor, tmp_path):
    log = str(tmp_path / "log")
    n = example(log)
    res = fd.run(n["h"], executor=executor)
    assert res.ok
    assert res[n["h"]] == 20160.0  # factorial(8) / 2
    assert _lines(log) == ["20160.0"]
    assert n["d"] not in res
    assert len(res) == 7  # a, b, c, e, g, g / 2 and h: not d, not f
    assert {node.name for node in res.graph} == {
        "a", "identity", "max", "factorials", "getitem", "truediv", "put"}


def test_example_unpacks_with_nout(executor, tmp_path):
    log = str(tmp_path / "log")
    n = example(log)
    f, g = n["e"]
    assert fd.compute(f, g, n["d"], executor=executor) == (24, 40320, 2.0)
    assert _lines(log) == ["d"]


def test_example_as_a_graph_runs_its_leaves(executor, tmp_path):
    log = str(tmp_path / "log")
    n = example(log)
    res = executor.run(fd.Graph(n["h"], n["f"]))
    assert (res[n["h"]], res[n["f"]]) == (20160.0, 24)
    assert _lines(log) == ["20160.0"]


def test_example_with_a_failing_op_keeps_partial_results(executor, tmp_path):
    log = str(tmp_path / "log")
    n = example(log, make_e=failing_factorials)
    res = fd.run(n["h"], n["d"], executor=executor)
    assert {name: res.state(n[name]) for name in "abcdegh"} == {
        "a": "done", "b": "done", "c": "done", "d": "done", "e": "failed",
        "g": "upstream_failed", "h": "upstream_failed",
    }
    assert n["f"] not in res
    assert res[n["d"]] == 2.0
    assert type(res.error(n["e"])) is ArithmeticError
    assert res.error(n["h"]).upstream == n["e"].key
    assert res.error(n["g"]).upstream == n["e"].key
    assert _lines(log) == ["d"]  # put never ran
    with pytest.raises(ArithmeticError, match="no factorials of 4 today"):
        fd.compute(n["h"], executor=executor)
    with pytest.raises(fd.UpstreamError, match=r"its upstream node 'failing_factorials-\w+' "
                                               r"failed with ArithmeticError"):
        res[n["h"]]


# -- "Dask Do" ------------------------------------------------------------------------------

def test_dask_do(executor):
    _, result = dask_do()
    assert fd.compute(result, executor=executor) == (357,)
    assert result.compute(executor=executor) == 357


# -- "Referencing symbols": functions from other modules ------------------------------------

@fd.op
def distinct(items):
    return list(dict.fromkeys(items))


def test_functions_from_other_modules(executor):
    mapped = fd.op(map)(operator.add, [1, 2, 3], [4, 5, 6])
    third = fd.op(operator.getitem)(distinct(mapped), 2)
    assert third.compute(executor=executor) == 9


# -- "Dask Cluster" ---------------------------------------------------------------------------

def test_dask_cluster_shape():
    best = dask_cluster()
    names = [node.name for node in fd.Graph(best)]
    assert {name: names.count(name) for name in set(names)} == {
        "load": 100, "load_from_sql": 1, "process": 100, "roll": 96, "compare": 200,
        "collect": 1, "reduction": 1,
    }  # 98 rolls are built; the 200 random compares happen to use 96 of them


def test_dask_cluster(executor):
    assert dask_cluster().compute(executor=executor) == DASK_CLUSTER_RESULT


def test_dask_cluster_agrees_with_plain_python():
    reference = len("sql://mytable")
    processed = [i * reference % 101 for i in range(100)]
    rolled = [processed[i] + 2 * processed[i + 1] + 3 * processed[i + 2] for i in range(98)]
    rng = random.Random(1)
    compared = [abs(rng.choice(rolled) - rng.choice(rolled)) for _ in range(200)]
    assert (len(compared), sum(compared), max(compared)) == DASK_CLUSTER_RESULT


# -- subgraphs of the 10-node reference DAG ---------------------------------------------------

@fd.op
def vertex(label, *deps):
    return label


EDGES = [(2, 1), (2, 3), (3, 4), (3, 5), (4, 6), (5, 6), (6, 7), (6, 8), (9, 8), (9, 10)]


def reference_dag():
    """Nodes 1..10 with EDGES (dependency -> dependent), built with ops."""
    n = {}
    for i in (2, 9, 1, 3, 4, 5, 6, 7, 8, 10):
        n[i] = vertex(i, *(n[a] for a, b in EDGES if b == i))
    return n


def shape(graph, n):
    label = {node.key: i for i, node in n.items()}
    return ({label[k] for k in graph.nx.nodes},
            {(label[a], label[b]) for a, b in graph.nx.edges})


def test_reference_dag_edges():
    n = reference_dag()
    graph = fd.Graph(n[1], n[7], n[8], n[10])
    assert shape(graph, n) == (set(range(1, 11)), set(EDGES))


def test_graph_equality_ignores_target_order():
    n = reference_dag()
    assert fd.Graph(n[1], n[7], n[8], n[10]) == fd.Graph(n[10], n[8], n[7], n[1])
    assert fd.Graph(n[1], n[7], n[8], n[10]) == fd.Graph(n[1], n[1], n[7], n[8], n[10], n[6])
    assert fd.Graph(n[1], n[7], n[8], n[10]) != fd.Graph(n[1], n[7], n[8])


def test_ancestor_subgraph():
    n = reference_dag()
    g = fd.Graph(n[1], n[7], n[8], n[10])
    assert shape(g.subgraph(targets=[n[9], n[10]]), n) == ({9, 10}, {(9, 10)})
    assert shape(g.subgraph(targets=[n[10]]), n) == ({9, 10}, {(9, 10)})
    assert shape(g.subgraph(targets=n[10]), n) == ({9, 10}, {(9, 10)})
    assert shape(g.subgraph(targets=[n[1], n[7]]), n) == (set(range(1, 8)), set(EDGES[:7]))
    assert shape(g.subgraph(targets=[n[7]]), n) != (set(range(1, 8)), set(EDGES[:7]))
    assert shape(g.subgraph(targets=[n[7]]), n) == (
        {2, 3, 4, 5, 6, 7}, {(2, 3), (3, 4), (3, 5), (4, 6), (5, 6), (6, 7)})
    by_key = g.subgraph(targets=[n[9].key, n[10].key])
    assert by_key == g.subgraph(targets=[n[9], n[10]])


def test_descendant_subgraph():
    n = reference_dag()
    g = fd.Graph(n[1], n[7], n[8], n[10])
    expected = ({1, 2, 6, 7, 8, 9, 10}, {(6, 7), (6, 8), (9, 8), (9, 10), (2, 1)})
    assert shape(g.subgraph(inputs=[n[6]]), n) == expected
    assert shape(g.subgraph(inputs=[n[6], n[5]]), n) == expected
    assert shape(g.subgraph(inputs=[n[6].key]), n) == expected
    assert shape(g.subgraph(inputs=[n[1], n[7], n[8], n[10]]), n) == ({1, 7, 8, 10}, set())


def test_subgraph_with_targets_and_inputs():
    n = reference_dag()
    g = fd.Graph(n[1], n[7], n[8], n[10])
    assert shape(g.subgraph(targets=[n[1], n[7]], inputs=[n[4]]), n) == (
        {1, 2, 3, 4, 5, 6, 7}, {(2, 1), (2, 3), (3, 5), (4, 6), (5, 6), (6, 7)})
    assert shape(g.subgraph(targets=[n[8]], inputs=[n[6]]), n) == (
        {6, 8, 9}, {(6, 8), (9, 8)})


def test_descendant_subgraph_runs_with_the_inputs_supplied(executor):
    n = reference_dag()
    g = fd.Graph(n[1], n[7], n[8], n[10]).subgraph(inputs=[n[6]])
    res = executor.run(g, overrides={n[6].key: "six"})
    assert res.ok
    assert {i: res.state(n[i]) for i in (1, 2, 6, 7, 8, 9, 10)} == {
        1: "done", 2: "done", 6: "skipped", 7: "done", 8: "done", 9: "done", 10: "done"}
    assert [res[n[i]] for i in (1, 7, 8, 10)] == [1, 7, 8, 10]


def test_a_cut_subgraph_without_its_inputs_is_refused(executor):
    n = reference_dag()
    g = fd.Graph(n[7]).subgraph(inputs=[n[6]])
    with pytest.raises(fd.GraphError, match=r"are inputs of this subgraph: their ancestors "
                                            r"were cut away"):
        executor.run(g)


# -- partial runs with overrides ---------------------------------------------------------------

@fd.op
def step(log, label, x):
    _log(log, label)
    return x + 1


def test_partial_run_reuses_an_earlier_value(executor, tmp_path):
    log = str(tmp_path / "log")
    a = step(log, "a", 1)
    b = step(log, "b", a)
    c = step(log, "c", b)
    first = fd.run(a, b, executor=executor)
    assert (first[a], first[b]) == (2, 3)
    assert _lines(log) == ["a", "b"]
    second = fd.run(c, executor=executor, overrides={b: first[b]})
    assert second[c] == 4
    assert _lines(log) == ["a", "b", "c"]
    assert (second.state(a) if a in second else "absent", second.state(b)) == ("absent", "skipped")


def test_an_override_that_differs_from_the_real_value_is_used(executor, tmp_path):
    log = str(tmp_path / "log")
    a = step(log, "a", 1)
    b = step(log, "b", a)
    c = step(log, "c", b)
    assert fd.compute(c, executor=executor, overrides={b: 100}) == (101,)
    assert fd.compute(c, executor=executor, overrides={a: -5}) == (-3,)
    assert _lines(log) == ["c", "b", "c"]


def test_an_overridden_target_comes_back_as_given(executor, tmp_path):
    log = str(tmp_path / "log")
    a = step(log, "a", 1)
    assert fd.compute(a, executor=executor, overrides={a: "given"}) == ("given",)
    assert _lines(log) == []


def test_an_ancestor_still_needed_elsewhere_runs_once(executor, tmp_path):
    log = str(tmp_path / "log")
    a = step(log, "a", 1)
    b = step(log, "b", a)
    c = step(log, "c", a)
    d = fd.op(lambda x, y: (x, y), name="pair")(b, c)
    res = fd.run(d, executor=executor, overrides={b: 50})
    assert res[d] == (50, 3)
    assert sorted(_lines(log)) == ["a", "c"]
    assert res.state(b) == "skipped"


# -- cycles --------------------------------------------------------------------------------

def test_a_networkx_graph_with_a_cycle_is_refused():
    n = reference_dag()
    g = fd.Graph(n[1], n[7], n[8], n[10]).nx.copy()
    g.add_edge(n[7].key, n[3].key)  # 3 -> 4 -> 6 -> 7 -> 3
    with pytest.raises(fd.CycleError, match=r"the graph has a cycle: vertex-\w+ -> ") as info:
        fd.Graph(g)
    label = {node.key: i for i, node in n.items()}
    assert sorted(label[k] for k in info.value.cycle) in ([3, 4, 6, 7], [3, 5, 6, 7])
    assert isinstance(info.value, fd.GraphError)


def test_a_two_node_cycle_names_both_nodes():
    a, b = vertex("a"), vertex("b")
    g = nx.DiGraph()
    g.add_node(a.key, node=a)
    g.add_node(b.key, node=b)
    g.add_edges_from([(a.key, b.key), (b.key, a.key)])
    with pytest.raises(fd.CycleError) as info:
        fd.Graph(g)
    assert sorted(info.value.cycle) == sorted([a.key, b.key])
    first, second = info.value.cycle
    assert str(info.value) == (
        f"the graph has a cycle: {first} -> {second} -> {first}. "
        "A flowdispatch graph must be acyclic: remove one of these edges.")


def test_a_json_graph_with_a_cycle_is_refused():
    p = vertex("p")
    q = vertex("q", p)
    r = vertex("r", q)
    data = json.loads(fd.Graph(r).to_json())
    assert fd.Graph.from_json(json.dumps(data), allow=[__name__]) == fd.Graph(r)
    first = next(record for record in data["nodes"] if record["key"] == p.key)
    first["args"].append({"__node__": r.key})  # p now needs r: p -> q -> r -> p
    with pytest.raises(fd.CycleError, match=r"the graph has a cycle: vertex-\w+ -> vertex-\w+ "
                                            r"-> vertex-\w+ -> vertex-\w+\. ") as info:
        fd.Graph.from_json(json.dumps(data), allow=[__name__])
    assert sorted(info.value.cycle) == sorted([p.key, q.key, r.key])


def test_nodes_cannot_be_mutated_into_a_cycle():
    a = vertex("a")
    b = vertex("b", a)
    with pytest.raises(AttributeError, match=r"a Node is immutable: cannot set 'args'"):
        a.args = (b,)
    with pytest.raises(AttributeError, match=r"a Node is immutable: cannot set '_deps'"):
        a._deps = (b,)


# -- components ------------------------------------------------------------------------------

@fd.op(pure=True)
def pure_inc(x):
    return x + 1


@fd.op(pure=True)
def pure_double(x):
    return 2 * x


@fd.op(pure=True)
def pure_mul(x, y):
    return x * y


def component(a):
    return pure_inc(a), pure_double(a)


def test_a_component_function_builds_the_same_graph_as_inline_code():
    a = pure_inc(1)
    b, c = component(a)
    d = pure_mul(b, c)
    inline = pure_mul(pure_inc(pure_inc(1)), pure_double(pure_inc(1)))
    assert fd.Graph(d) == fd.Graph(inline)
    assert len(fd.Graph(d)) == 4
    assert d.key == inline.key


def test_a_component_of_impure_ops_builds_an_isomorphic_graph():
    def comp(a):
        return identity(a), logged_sqrt("unused", a)

    b, c = comp(identity(1))
    d = fd.op(lambda x, y: x, name="mul")(b, c)
    a = identity(1)
    inline = fd.op(lambda x, y: x, name="mul")(identity(a), logged_sqrt("unused", a))
    assert fd.Graph(d) != fd.Graph(inline)  # unique keys: two calls, two graphs
    assert nx.is_isomorphic(
        fd.Graph(d).nx, fd.Graph(inline).nx,
        node_match=lambda x, y: x["node"].name == y["node"].name,
    )


def test_component_function_value(executor):
    def six_times_four():
        add3 = fd.op(lambda x, y, z: x + y + z, name="add3")
        return add3(1, 2, 3) * add3(1, 2, 1)

    assert six_times_four().compute(executor=executor) == 24


@dataclasses.dataclass
class MyType:
    value: int


@fd.op
def unwrap(x: MyType) -> int:
    return x.value


def test_non_node_data_is_not_a_node():
    a = MyType(3)
    b = unwrap(a)
    c = pure_inc(b)
    d = pure_double(c)
    assert len(fd.Graph(d)) == 3
    assert b.dependencies == ()
    assert d.compute(executor="sync") == 8
