"""Graph: the targets and their ancestors as a networkx DAG; subgraphs; lowering to dask."""

import operator

import dask
import networkx as nx
import pytest

import flowdispatch as fd


@fd.op
def inc(x):
    return x + 1


@fd.op
def add(x, y):
    return x + y


def diamond():
    a = fd.value(1, name="a")
    b = inc(a)
    c = inc(a)
    d = add(b, c)
    return a, b, c, d


# -- reading ---------------------------------------------------------------------------------

def test_len_contains_and_getitem():
    a, b, c, d = diamond()
    g = fd.Graph(d)
    assert len(g) == 4
    assert a in g and a.key in g
    assert inc(1) not in g and "nope" not in g and 3 not in g
    assert g[b.key] is b


def test_iteration_is_topological():
    a, b, c, d = diamond()
    order = list(fd.Graph(d))
    assert order[0] == a and order[-1] == d
    assert set(order) == {a, b, c, d}
    position = {node: i for i, node in enumerate(order)}
    assert all(position[dep] < position[node] for node in order for dep in node.dependencies)


def test_targets_dependencies_and_dependents():
    a, b, c, d = diamond()
    g = fd.Graph(d, b)
    assert g.targets == (d, b)
    assert g.dependencies(d) == (b, c)
    assert g.dependencies(a) == ()
    assert g.dependents(a) == (b, c)
    assert g.dependents(d.key) == ()
    assert g.dependencies(b.key) == (a,)


def test_targets_in_containers_count_once():
    a, b, c, d = diamond()
    g = fd.Graph([d, {"again": d}], (b,))
    assert g.targets == (d, b)


def test_targets_must_be_nodes():
    with pytest.raises(TypeError, match=r"targets: expected nodes \(or lists, tuples, dicts of "
                                        r"nodes\), got int 3"):
        fd.Graph(3)
    with pytest.raises(TypeError, match=r"got list \[1, 2\]"):
        fd.Graph([1, 2])


def test_an_empty_graph():
    g = fd.Graph()
    assert (len(g), list(g), g.targets) == (0, [], ())


def test_equality_is_same_keys_and_edges():
    a, b, c, d = diamond()
    assert fd.Graph(d) == fd.Graph(d)
    assert fd.Graph(d, b) == fd.Graph(b, d)
    assert fd.Graph(d) == fd.Graph(d, a)  # same nodes and edges, other targets
    assert fd.Graph(d) != fd.Graph(b, c)
    assert fd.Graph(d) != fd.Graph(add(b, c))
    assert (fd.Graph(d) == "graph") is False


def test_a_graph_is_not_hashable():
    with pytest.raises(TypeError, match="unhashable type: 'Graph'"):
        hash(fd.Graph(inc(1)))


def test_repr():
    a, b, c, d = diamond()
    assert repr(fd.Graph(d)) == f"<Graph: 4 nodes, targets {d.key}>"
    many = [inc(i) for i in range(5)]
    assert repr(fd.Graph(many)) == (
        f"<Graph: 5 nodes, targets {many[0].key}, {many[1].key}, {many[2].key}, ...>")


def test_unknown_nodes_raise_graph_error():
    a, b, c, d = diamond()
    g = fd.Graph(b)
    with pytest.raises(fd.GraphError) as info:
        g.dependencies(d)
    assert str(info.value) == (f"node {d.key!r} is not in this graph of 2 nodes; expected one "
                               "of the targets or their ancestors")
    with pytest.raises(fd.GraphError, match=r"node 'missing' is not in this graph"):
        g["missing"]
    with pytest.raises(fd.GraphError, match="is not in this graph"):
        g.dependents(c)


# -- networkx --------------------------------------------------------------------------------

def test_nx_has_keys_edges_and_the_node_attribute():
    a, b, c, d = diamond()
    g = fd.Graph(d).nx
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == {a.key, b.key, c.key, d.key}
    assert set(g.edges) == {(a.key, b.key), (a.key, c.key), (b.key, d.key), (c.key, d.key)}
    assert all(g.nodes[node.key]["node"] is node for node in (a, b, c, d))
    assert nx.is_directed_acyclic_graph(g)


def test_a_graph_from_networkx():
    a, b, c, d = diamond()
    again = fd.Graph(fd.Graph(d).nx)
    assert again == fd.Graph(d)
    assert again.targets == (d,)
    two_sinks = fd.Graph(fd.Graph(b, c).nx)
    assert set(two_sinks.targets) == {b, c}


def test_a_networkx_graph_needs_the_node_attribute():
    g = nx.DiGraph()
    g.add_node("x")
    with pytest.raises(fd.GraphError) as info:
        fd.Graph(g)
    assert str(info.value) == (
        "networkx node 'x': expected attribute 'node' holding the Node with that key, got "
        "None. Build graphs with fd.Graph(*targets).")


def test_a_networkx_node_key_must_match_its_node():
    node = inc(1)
    g = nx.DiGraph()
    g.add_node("other", node=node)
    with pytest.raises(fd.GraphError, match=rf"networkx node 'other': expected attribute 'node' "
                                            rf"holding the Node with that key, got "
                                            rf"Node\('{node.key}'\)"):
        fd.Graph(g)


def test_networkx_edges_must_follow_the_arguments():
    a, b, c, d = diamond()
    g = fd.Graph(d).nx.copy()
    g.remove_edge(c.key, d.key)
    with pytest.raises(fd.GraphError) as info:
        fd.Graph(g)
    assert str(info.value) == (
        f"networkx node {d.key!r}: its edges come from {[b.key]}, but the node depends on "
        f"{sorted([b.key, c.key])}; the edges must follow the node's arguments")
    extra = fd.Graph(d).nx.copy()
    extra.add_edge(b.key, c.key)
    with pytest.raises(fd.GraphError, match=rf"networkx node {c.key!r}: its edges come from"):
        fd.Graph(extra)


def test_a_networkx_cycle_is_refused_before_anything_else():
    g = nx.DiGraph([("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")])
    with pytest.raises(fd.CycleError) as info:
        fd.Graph(g)
    assert sorted(info.value.cycle) == ["x", "y", "z"]
    assert "the graph has a cycle: " in str(info.value)


# -- size ------------------------------------------------------------------------------------

def test_a_million_node_chain_builds_without_recursion():
    pos = fd.op(operator.pos, name="pos")
    node = first = fd.value(0)
    for _ in range(1_000_000):
        node = pos(node)
    g = fd.Graph(node)
    assert len(g) == 1_000_001
    nodes = iter(g)
    assert next(nodes) is first
    assert g.dependencies(node) == node.dependencies
    assert g.targets == (node,)


# -- subgraphs -------------------------------------------------------------------------------

def test_subgraph_defaults_to_the_targets():
    a, b, c, d = diamond()
    assert fd.Graph(d).subgraph() == fd.Graph(d)


def test_subgraph_of_nodes_not_in_the_graph():
    a, b, c, d = diamond()
    g = fd.Graph(b)
    with pytest.raises(fd.GraphError, match=rf"node {d.key!r} is not in this graph of 2 nodes"):
        g.subgraph(targets=[d])
    with pytest.raises(fd.GraphError, match=rf"node {c.key!r} is not in this graph"):
        g.subgraph(inputs=[c])
    with pytest.raises(fd.GraphError, match=r"node 'nope' is not in this graph"):
        g.subgraph(inputs="nope")
    with pytest.raises(TypeError, match=r"inputs: expected nodes .*got int 5"):
        g.subgraph(inputs=[5])


def test_a_cut_subgraph_lists_its_inputs_and_hides_their_dependencies():
    a, b, c, d = diamond()
    g = fd.Graph(d).subgraph(inputs=[b])
    assert g.inputs == (b,)
    assert g.dependencies(b) == ()
    assert set(g.nx.edges) == {(b.key, d.key), (c.key, d.key), (a.key, c.key)}
    assert len(g) == 4  # a stays: c still needs it


def test_a_subgraph_of_a_subgraph_keeps_its_cuts():
    a, b, c, d = diamond()
    g = fd.Graph(d).subgraph(inputs=[b, c])
    assert set(n.key for n in g) == {b.key, c.key, d.key}
    assert g.subgraph(targets=[d]) == g
    assert set(g.subgraph(targets=[d]).inputs) == {b, c}


# -- lowering to dask ------------------------------------------------------------------------

def test_to_dask_runs_on_dask_schedulers():
    a, b, c, d = diamond()
    dsk = fd.Graph(d).to_dask()
    assert set(dsk) == {a.key, b.key, c.key, d.key}
    assert dask.get(dsk, d.key) == 4
    assert dask.threaded.get(dsk, [b.key, d.key]) == (2, 4)


def test_to_dask_of_a_cut_graph_needs_its_inputs():
    a, b, c, d = diamond()
    g = fd.Graph(d).subgraph(inputs=[b])
    with pytest.raises(fd.GraphError) as info:
        g.to_dask()
    assert str(info.value) == (
        f"nodes {[b.key]} are inputs of this subgraph: their ancestors were cut away, so "
        "their values must be supplied (overrides={node: value})")


def test_to_dask_with_the_inputs_supplied():
    a, b, c, d = diamond()
    dsk = fd.Graph(d).subgraph(inputs=[b]).to_dask({b.key: 40})
    assert dask.get(dsk, d.key) == 42
