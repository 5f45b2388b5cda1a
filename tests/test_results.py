"""Results: states, values, errors, timings and attempts of a run; rerun."""

import pytest

import flowdispatch as fd
from flowdispatch.api import run_graph
from flowdispatch.core.results import STATES


@fd.op
def inc(x):
    return x + 1


@fd.op
def half(x):
    if x % 2:
        raise ValueError(f"{x} is odd")
    return x // 2


@fd.op(priority=10)
def explode():
    raise OSError("disk on fire")


class Flaky:
    """Fails the first ``failures`` calls (counted here: sync executor only)."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} failed")
        return x


def test_states_are_the_documented_six():
    assert STATES == ("done", "failed", "upstream_failed", "cached", "cancelled", "skipped")


def test_a_successful_run():
    a = inc(1)
    b = inc(a)
    res = fd.run(b, executor="sync")
    assert (res.ok, res.failed, res.counts) == (True, (), {"done": 2})
    assert res.targets == (b,)
    assert res[b] == 3
    assert (res.state(a), res.state(b.key)) == ("done", "done")
    assert res.error(b) is None
    assert res.attempts(b) == 1
    assert res.duration(b) >= 0.0
    assert (len(res), a in res, b.key in res, inc(0) in res) == (2, True, True, False)
    assert repr(res) == "<Results: 2 done>"
    assert res.first_error() is None


def test_results_iterate_over_the_runs_nodes_in_topological_order():
    a = inc(1)
    b, c = inc(a), half(a)
    d = fd.collect([c, b])
    res = fd.run(d, executor="threads", overrides={a: 4})
    assert list(res) == list(fd.Graph(d))
    order = [node.key for node in res]
    assert order.index(a.key) < order.index(b.key) < order.index(d.key)
    assert order.index(c.key) < order.index(d.key)
    assert {node: res.state(node) for node in res} == {
        a: "skipped", b: "done", c: "done", d: "done"}


def test_intermediate_values_are_released_but_targets_kept():
    a = inc(1)
    b = inc(a)
    res = fd.run(b, executor="sync")
    with pytest.raises(KeyError) as info:
        res[a]
    assert info.value.args[0] == (
        f"the value of {a.key!r} was released once every node that needed it had run; make "
        "it a target (fd.run(..., node)) to keep it")
    assert fd.run(b, a, executor="sync")[a] == 2


def test_a_node_that_was_not_in_the_run():
    other = inc(5)
    res = fd.run(inc(1), executor="sync")
    with pytest.raises(KeyError) as info:
        res.state(other)
    assert info.value.args[0] == (
        f"{other!r} was not part of this run; expected one of its 1 nodes (the targets and "
        "their ancestors)")
    with pytest.raises(KeyError, match="was not part of this run"):
        res[other]
    with pytest.raises(KeyError, match="'missing' was not part of this run"):
        res.error("missing")


def test_failed_and_upstream_failed():
    good, bad = half(4), half(3)
    after = inc(bad)
    res = fd.run(good, bad, after, executor="sync")
    assert res.counts == {"done": 1, "failed": 1, "upstream_failed": 1}
    assert (res.ok, res.failed) == (False, (bad,))
    assert res[good] == 2
    with pytest.raises(ValueError, match="3 is odd"):
        res[bad]
    assert res.first_error() == (bad.key, res.error(bad))
    upstream = res.error(after)
    assert isinstance(upstream, fd.UpstreamError)
    assert (upstream.key, upstream.upstream, upstream.error) == (after.key, bad.key,
                                                                 res.error(bad))
    with pytest.raises(fd.UpstreamError, match=rf"node {after.key!r} did not run: its upstream "
                                               rf"node {bad.key!r} failed with ValueError: 3 is "
                                               rf"odd"):
        res[after]
    assert res.attempts(after) == 0
    assert res.duration(after) is None
    assert repr(res) == "<Results: 1 done, 1 failed, 1 upstream_failed>"


def test_skipped_nodes_hold_their_override():
    a = inc(1)
    b = inc(a)
    res = fd.run(b, executor="sync", overrides={a: 10})
    assert (res.state(a), res[a], res[b]) == ("skipped", 10, 11)
    assert res.attempts(a) == 0
    assert res.ok


def test_cancelled_nodes_raise_cancelled_error():
    bad = explode()
    later = inc(1)
    res = run_graph(fd.Graph(bad, later), executor="sync", fail_fast=True)
    assert (res.state(bad), res.state(later)) == ("failed", "cancelled")
    with pytest.raises(fd.CancelledError) as info:
        res[later]
    assert str(info.value) == f"node {later.key!r} was cancelled before it finished"
    assert res.error(later) is None
    assert not res.ok


def test_attempts_count_retries():
    flaky = Flaky(failures=2)
    node = fd.op(flaky, retries=3, name="flaky")(7)
    res = fd.run(node, executor="sync")
    assert (res[node], res.attempts(node), flaky.calls) == (7, 3, 3)


def test_rerun_runs_only_what_did_not_complete():
    flaky = Flaky(failures=1)
    calls = []
    a = fd.op(lambda: calls.append("a") or 1, name="a")()
    b = fd.op(flaky, name="b")(a)
    c = fd.op(lambda x: calls.append("c") or x + 1, name="c")(b)
    d = fd.op(lambda: calls.append("d") or "d", name="d")()
    res = fd.run(c, d, executor="sync")
    assert res.counts == {"done": 2, "failed": 1, "upstream_failed": 1}
    again = res.rerun(executor="sync")
    assert again.ok
    assert (again[c], again[d]) == (2, "d")
    assert sorted(calls) == ["a", "c", "d"]
    assert flaky.calls == 2
    assert again.attempts(b) == 2
    assert again.states == {a.key: "done", b.key: "done", c.key: "done", d.key: "done"}
    assert (res.state(b), res.state(c)) == ("failed", "upstream_failed")  # res is unchanged


def test_rerun_of_a_complete_run_is_the_same_results():
    res = fd.run(inc(1), executor="sync")
    assert res.rerun(executor="sync") is res


def test_rerun_after_cancellation():
    bad = explode()
    later = inc(1)
    res = run_graph(fd.Graph(bad, later), executor="sync", fail_fast=True)
    again = res.rerun(executor="sync")
    assert (again.state(bad), again.state(later), again[later]) == ("failed", "done", 2)
    assert again.attempts(bad) == 2


def test_rerun_that_fails_again_keeps_the_new_error():
    bad = half(3)
    res = fd.run(bad, executor="sync")
    again = res.rerun(executor="sync")
    assert again.state(bad) == "failed"
    assert again.error(bad) is not res.error(bad)
    assert again.attempts(bad) == 2
