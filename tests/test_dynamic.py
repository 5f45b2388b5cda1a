"""Dynamic workflows: ops that return nodes, and maps over values known only at run time."""

from __future__ import annotations

import threading

import pytest

import flowdispatch as fd

EXECUTORS = ["sync", "threads", "processes"]


@fd.op
def add(a, b):
    return a + b


@fd.op
def fib(n):
    if n < 2:
        return n
    return add(fib(n - 1), fib(n - 2))


@fd.op
def countdown(n):
    return countdown(n - 1) if n else "liftoff"


@fd.op
def listing(n):
    return [f"file{i}" for i in range(n)]


@fd.op
def size(name, extra=0):
    return len(name) + extra


@fd.op
def picky(name):
    if name == "file2":
        raise ValueError(f"cannot read {name}")
    return len(name)


@fd.op
def pair(n):
    return {"low": fib(n), "high": fib(n + 1), "plain": n}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_recursion_expands_on_every_executor(executor):
    res = fd.run(fib(7), executor=executor)
    assert res[res.targets[0]] == 13
    assert res.ok
    assert len(res) == len(list(res)) == res.counts["done"]
    root = res.targets[0]
    assert [child.name for child in res.children(root)] == ["add"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_lazy_map_is_one_node_whose_children_appear_at_run_time(executor):
    files = listing(4)
    sizes = size.map(files, extra=fd.unmapped(1))
    assert isinstance(sizes, fd.Node)
    total = fd.op(sum)(sizes)
    res = fd.run(total, executor=executor)
    assert res[total] == 4 * 6
    children = res.children(sizes)
    assert [c.name for c in children] == ["size"] * 4
    assert [c.args for c in children] == [("file0",), ("file1",), ("file2",), ("file3",)]
    assert all(res.state(c) == "done" and res.attempts(c) == 1 for c in children)
    assert res.duration(children[0]) is not None


def test_containers_of_nodes_expand_with_their_structure():
    assert fd.compute(pair(5), executor="sync") == ({"low": 5, "high": 8, "plain": 5},)


def test_ten_thousand_nested_expansions_on_sync():
    res = fd.run(countdown(10_000), executor="sync")
    assert res[res.targets[0]] == "liftoff"
    assert len(res) == 10_001


def test_several_mapped_arguments_and_concrete_lists_mix():
    res = fd.compute(add.map(fd.value([1, 2, 3]), [10, 20, 30]), executor="sync")
    assert res == ([11, 22, 33],)
    assert isinstance(add.map([1, 2], [3, 4]), list)  # concrete lists: today's behaviour


def test_unequal_lengths_name_the_node():
    mapped = add.map(fd.value([1, 2, 3]), fd.value([1]))
    with pytest.raises(ValueError, match=r"node 'add\.map-.*': add.map\(\) expected iter"):
        fd.compute(mapped, executor="sync")


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failing_child_fails_its_parent_upstream(executor):
    files = listing(4)
    sizes = picky.map(files)
    total = fd.op(sum)(sizes)
    res = fd.run(total, executor=executor)
    bad = res.children(sizes)[2]
    assert res.state(bad) == "failed"
    assert res.failed == (bad,)
    assert res.state(sizes) == res.state(total) == "upstream_failed"
    assert res.error(sizes).upstream == bad.key
    assert res.counts == {"done": 4, "failed": 1, "upstream_failed": 2}
    with pytest.raises(ValueError, match="cannot read file2") as info:
        fd.compute(total, executor=executor)
    notes = "\n".join(info.value.__notes__)
    assert "created at run time by node 'picky.map-" in notes


def test_rerun_runs_only_the_failed_children():
    calls: list[str] = []
    broken = threading.Event()
    broken.set()

    @fd.op
    def names():
        calls.append("names")
        return ["a", "bb", "ccc"]

    @fd.op
    def measure(name):
        calls.append(name)
        if name == "bb" and broken.is_set():
            raise OSError("flaky")
        return len(name)

    lengths = measure.map(names())
    total = fd.op(sum)(lengths)
    res = fd.run(total, executor="sync")
    assert res.state(total) == "upstream_failed"
    broken.clear()
    calls.clear()
    again = res.rerun(executor="sync")
    assert again[total] == 6
    assert calls == ["bb"]  # not names(), not the map's body, not "a" or "ccc"
    assert again.ok and len(again) == len(res)
    child = again.children(lengths)[1]
    assert again.attempts(child) == 2


def test_a_cycle_through_expansion_names_the_chain():
    @fd.op(pure=True)
    def loop(n):
        return loop(1 - n)

    res = fd.run(loop(0), executor="sync")
    (inner,) = res.failed  # loop(1), which returned loop(0): its own parent
    error = res.error(inner)
    assert isinstance(error, fd.CycleError)
    assert set(error.cycle) == {inner.key, res.targets[0].key}
    assert res.state(res.targets[0]) == "upstream_failed"
    with pytest.raises(fd.CycleError, match="the graph has a cycle: loop-"):
        fd.compute(loop(0), executor="sync")


def test_the_number_of_nodes_created_at_run_time_is_limited():
    with fd.config.set(max_dynamic_nodes=50):
        with pytest.raises(fd.GraphError, match="past max_dynamic_nodes=50 nodes"):
            fd.compute(countdown(100), executor="sync")
        assert fd.compute(countdown(40), executor="sync") == ("liftoff",)


def test_children_are_cached_like_any_node(tmp_path):
    calls: list[str] = []

    @fd.op(cache=True, version="1")
    def measure(name):
        calls.append(name)
        return len(name)

    with fd.config.set(cache_dir=str(tmp_path)):
        first = fd.run(measure.map(fd.value(["a", "bb"])), executor="sync")
        again = fd.run(measure.map(fd.value(["a", "bb", "ccc"])), executor="sync")
    assert first[first.targets[0]] == [1, 2]
    assert again[again.targets[0]] == [1, 2, 3]
    assert sorted(calls) == ["a", "bb", "ccc"]
    assert [again.state(c) for c in again.children(again.targets[0])] == [
        "cached", "cached", "done"]


def test_a_cached_parent_caches_its_final_value(tmp_path):
    calls: list[int] = []

    @fd.op(cache=True, version="1")
    def tree(n):
        calls.append(n)
        return add(fd.value(n), fd.value(1))

    with fd.config.set(cache_dir=str(tmp_path)):
        first = fd.run(tree(3), executor="sync")
        again = fd.run(tree(3), executor="sync")
    assert first[first.targets[0]] == again[again.targets[0]] == 4
    assert again.state(again.targets[0]) == "cached" and len(again) == 1
    assert calls == [3]


def test_callbacks_hear_of_the_nodes_that_join():
    grown: list[int] = []
    finished: list[str] = []

    class Growth(fd.Callback):
        def on_expand(self, *, node, children, nodes):
            grown.append(len(nodes))
            assert [child.args for child in children] == [("file0",), ("file1",), ("file2",)]

        def on_node_finish(self, *, node, duration):
            finished.append(node.name)

    fd.compute(size.map(listing(3)), executor="sync", callbacks=[Growth()])
    assert grown == [3]
    assert sorted(finished) == ["listing", "size", "size", "size", "size.map"]


def test_the_drawing_shows_children_expanded_from_their_parent():
    sizes = size.map(listing(2))
    res = fd.run(sizes, executor="sync")
    source = res.visualize().source
    for child in res.children(sizes):
        assert f'"{child.key}" -> "{sizes.key}" [arrowhead=onormal style=dashed]' in source
    assert "4 done" in source
    many = fd.run(size.map(listing(300)), executor="sync")
    assert "size ×300" in many.visualize(collapse=True).source


def test_nodes_that_join_after_their_dependency_failed_blame_it():
    bad = picky.options(priority=10)("file2")  # runs, and fails, first

    @fd.op
    def later(n):
        return add(bad, n)  # joins the run after bad has failed

    parent = later(1)
    res = fd.run(bad, parent, executor="sync")
    (child,) = res.children(parent)
    assert res.state(bad) == "failed"
    assert res.state(child) == res.state(parent) == "upstream_failed"
    assert res.error(child).upstream == res.error(parent).upstream == bad.key


def test_a_returned_node_whose_value_was_released_is_a_clear_error():
    early = add(1, 2)
    used = add(early, 1)  # early's only dependent: its value is released after it

    @fd.op
    def late(x):
        return add(early, x)  # returns early, whose value is gone by now

    res = fd.run(late(used), executor="sync")
    (child,) = res.children(res.targets[0])
    assert res.state(child) == "failed"
    with pytest.raises(fd.GraphError, match=r"but its value was released when every node "
                                            r"then known had used it; make it a target"):
        res[child]
