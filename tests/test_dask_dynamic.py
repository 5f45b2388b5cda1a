"""Dynamic workflows on a real dask cluster: ops that return nodes, lazy maps.

Expansion happens on the client as each expanding node completes; the
children run on the same cluster. Ops log their runs to files (the workers are
other processes); every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

import flowdispatch as fd
from flowdispatch.testing import append_line as log_line, read_lines as lines
from flowdispatch.executors.dask import DaskExecutor
from test_dynamic import add, countdown, fib

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(180)


# -- ops (module level: the workers import this module) ----------------------------------
@fd.op
def listing(log, n):
    log_line(log, "listing")
    return list(range(n))


@fd.op
def square(log, x):
    log_line(log, f"square {x}")
    return x * x


@fd.op(cache=True)
def cached_square(log, x):
    log_line(log, f"square {x}")
    return x * x


@fd.op
def total(xs):
    return sum(xs)


@fd.op
def fails_first(log, x):
    """Fails the first time it runs for ``x == 2``; else gives ``10 * x``."""
    log_line(log, f"child {x}")
    if x == 2 and lines(log).count("child 2") == 1:
        raise ValueError("child 2 broke")
    return 10 * x


@fd.op
def spread(log, n):
    """Returns a list of child nodes (its op body logs each time it runs)."""
    log_line(log, "spread")
    return [fails_first(log, i) for i in range(n)]


@fd.op(cache=True)
def cached_spread(log, n):
    log_line(log, "spread")
    return [cached_square(log, i) for i in range(n)]


@fd.op
def inc(x):
    return x + 1


@fd.op
def twice_later(x):
    """Returns the node of ``2 * x``: an expansion in the middle of a chain."""
    return add(x, x)


@fd.op
def dask_key(x):
    """The dask key of the task this runs in."""
    return distributed.get_worker().get_current_task()


@fd.op
def keys_of(n):
    return [dask_key(i) for i in range(n)]


@fd.op
def odd_later(x):
    """``x`` if it is even; else the node of ``x + 1`` (a child that expands in turn)."""
    return x if x % 2 == 0 else inc(x)


@fd.op
def squares_to(log, n):
    """A lazy map of its own: children that are maps in turn."""
    return total(square.map(fd.unmapped(log), listing(log, n)))


@fd.op(workers=["worker-0"], allow_other_workers=True)
def nested(log, marker, depth):
    """The node one level down while ``depth``; at the bottom, the first time (while
    ``marker`` does not exist), SIGKILL this worker, else ``"bottom"``. Logs each run."""
    log_line(log, f"nested {depth}")
    if depth:
        return nested(log, marker, depth - 1)
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    from conftest import wait_until

    wait_until(lambda: _expansions_sent("nested-") >= 2, 60,
               "the parent, run again, to expand again")
    return "bottom"  # sent after that expansion: the client hears of it first


def _expansions_sent(prefix: str) -> int:
    """How many expansions of nodes whose keys start with ``prefix`` the workers have
    reported to the scheduler (which keeps them till the run has ended)."""
    from distributed import get_client

    from flowdispatch.executors.dask.worker import TOPIC

    return sum(1 for _, event in get_client().get_events(TOPIC)
               if len(event) == 6 and event[2] == "expand" and event[1].startswith(prefix))


# -- tests ---------------------------------------------------------------------------------
def test_recursion_finishes_on_one_worker_with_one_thread(tmp_path):
    """No task waits for another: fib(12) needs only one thread, however deep it goes."""
    from conftest import DaskProcesses

    cluster = DaskProcesses(tmp_path, n_workers=1, nthreads=1)
    cluster.start()
    outcome: dict = {}
    try:
        with DaskExecutor(cluster.address) as executor:
            executor.connect().wait_for_workers(1, timeout=60)
            assert list(executor.client.nthreads().values()) == [1]
            runner = threading.Thread(target=lambda: outcome.update(
                value=fd.compute(fib(12), executor=executor),
                nested=fd.compute(countdown(30), executor=executor),
                res=fd.run(fib(6), executor=executor)), daemon=True)
            runner.start()
            runner.join(120)
            assert not runner.is_alive(), "fib(12) did not finish on one thread in 120 s"
    finally:
        cluster.stop()
    assert outcome["value"] == (144,) and outcome["nested"] == ("liftoff",)
    res = outcome["res"]
    assert res[res.targets[0]] == 8
    assert len(res) == 37 and res.counts == {"done": 37}  # 25 fib calls, 12 adds


def test_lazy_map_list_map_sum(dask_executor, tmp_path):
    log = str(tmp_path / "log")
    files = listing(log, 4)
    squares = square.map(fd.unmapped(log), files)
    summed = total(squares)
    assert fd.compute(summed, executor=dask_executor) == (14,)
    res = fd.run(summed, executor=dask_executor)
    children = res.children(squares)
    assert [c.args[1] for c in children] == [0, 1, 2, 3]
    assert [res[c] for c in children] == [0, 1, 4, 9]
    assert res[squares] == [0, 1, 4, 9] and res[summed] == 14
    assert res.counts == {"done": 7}


def test_a_failing_child_fails_its_parent_and_rerun_runs_only_it(dask_executor, tmp_path):
    log = str(tmp_path / "log")
    parent = spread(log, 3)
    summed = total(parent)
    with pytest.raises(ValueError, match="child 2 broke") as caught:
        fd.compute(summed, executor=dask_executor)
    notes = "\n".join(getattr(caught.value, "__notes__", ()))
    assert "created at run time by node" in notes and repr(parent.key) in notes
    log = str(tmp_path / "log2")
    parent = spread(log, 3)
    summed = total(parent)
    res = fd.run(summed, executor=dask_executor)
    children = res.children(parent)
    assert [res.state(c) for c in children] == ["done", "done", "failed"]
    assert (res.state(parent), res.state(summed)) == ("upstream_failed", "upstream_failed")
    assert res.error(parent).upstream == children[2].key
    again = res.rerun(executor=dask_executor)
    assert again[summed] == 30 and again[parent] == [0, 10, 20]
    assert sorted(lines(log)) == ["child 0", "child 1", "child 2", "child 2", "spread"]


def test_children_keys_start_with_their_op_name(dask_executor):
    from dask.utils import key_split

    keys = fd.compute(keys_of(3), executor=dask_executor)[0]
    assert [key_split(k) for k in keys] == ["dask_key"] * 3
    assert len(set(keys)) == 3


def test_an_expansion_in_the_middle_of_a_folded_chain(dask_executor):
    """compute() folds inc -> twice_later -> inc into one task; the middle one expands."""
    chain = inc(twice_later(inc(1)))
    assert fd.compute(chain, executor=dask_executor) == (5,)
    res = fd.run(chain, executor=dask_executor)
    assert res[chain] == 5 and res.counts == {"done": 4}


def test_cached_children_and_a_cached_parent(dask_executor, tmp_path):
    log = str(tmp_path / "log")
    with fd.config.set(cache_dir=str(tmp_path / "cache")):
        first = fd.run(total(square.map(fd.unmapped(log), listing(log, 3))),
                       executor=dask_executor)
        mapped = cached_square.map(fd.unmapped(log), listing(log, 3))
        res = fd.run(mapped, executor=dask_executor)
        assert res[mapped] == [0, 1, 4] and res.counts == {"done": 5}
        again = fd.run(cached_square.map(fd.unmapped(log), listing(log, 3)),
                       executor=dask_executor)
        assert again.counts == {"done": 2, "cached": 3}  # the children were found
        parent = cached_spread(log, 2)
        assert fd.compute(parent, executor=dask_executor) == ([0, 1],)
        before = lines(log).count("spread")
        res = fd.run(cached_spread(log, 2), executor=dask_executor)
        assert res[res.targets[0]] == [0, 1] and res.counts == {"cached": 1}
        assert lines(log).count("spread") == before  # its final value: it did not expand
    assert first.counts == {"done": 6}


def test_children_that_expand_in_turn_after_their_parent_was_assembled(dask_executor, tmp_path):
    """A lazy map's value is built on the cluster along with its children, unless a child
    expands in turn: then it is built again once that child has completed."""
    log = str(tmp_path / "log")
    mixed = odd_later.map(listing(log, 6))
    summed = total(mixed)
    assert fd.compute(summed, executor=dask_executor) == (0 + 2 + 2 + 4 + 4 + 6,)
    res = fd.run(summed, executor=dask_executor)
    assert res[mixed] == [0, 2, 2, 4, 4, 6] and res[summed] == 18
    assert res.counts == {"done": 3 + 6 + 3}  # listing, the map, total; 6 children; 3 incs
    nested = squares_to.map(fd.unmapped(log), listing(log, 4))  # maps of maps
    both = total([total(nested), total(square.map(fd.unmapped(log), listing(log, 3)))])
    assert fd.compute(both, executor=dask_executor) == ((0 + 0 + 1 + 5) + 5,)


def test_a_run_that_nothing_left_can_finish_ends_with_a_clear_error(dask_executor, monkeypatch,
                                                                    tmp_path):
    """Were an expanded node's value never built (a bug), the run would wait for ever: it
    ends instead, failing the open nodes, and what completed keeps its value."""
    from flowdispatch.executors.dask import client

    monkeypatch.setattr(client, "settle", lambda *args: None)  # no task builds the value
    log = str(tmp_path / "log")
    files = listing(log, 3)
    mapped = square.map(fd.unmapped(log), files)
    summed = total(mapped)
    with pytest.raises(fd.ExecutorError, match="cannot finish"):
        fd.compute(summed, executor=dask_executor)
    res = fd.run(summed, files, executor=dask_executor)
    assert res[files] == [0, 1, 2]
    assert [res[child] for child in res.children(mapped)] == [0, 1, 4]
    assert res.state(summed) == "cancelled"  # fd.run ends once every task has


def test_the_scheduler_forgets_the_nodes_that_an_expansion_sent(dask_executor, tmp_path):
    """An expansion's event carries the nodes its op returned: once the run has ended,
    the scheduler keeps no history of them (it would keep the last 1,000 such events)."""
    from flowdispatch.executors.dask.worker import TOPIC

    log = str(tmp_path / "log")
    client = dask_executor.connect()
    assert fd.compute(total(square.map(fd.unmapped(log), listing(log, 50))),
                      executor=dask_executor) == (sum(i * i for i in range(50)),)
    assert client.get_events(TOPIC) == ()


def test_an_op_that_expanded_and_runs_again_with_its_lost_worker_keeps_its_first_children(
        dask_executor, tmp_path):
    """The child (of an op seen to expand, so its parent's value waits for it) kills the
    worker that holds its parent's task result; dask runs the parent again, and what
    it returns that time (heard before the child completes) is ignored: the run goes
    on with the first children."""
    from conftest import wait_for_workers_back

    client = dask_executor.connect()
    workers = client.scheduler_info(n_workers=-1)["workers"]
    (one,) = [address for address, w in workers.items() if w["name"] == "worker-0"]
    log, marker = str(tmp_path / "log"), str(tmp_path / "marker")
    top = nested(log, marker, 1)
    heard: list[str] = []

    class Expansions(fd.Callback):
        def on_expand(self, *, node, children, nodes):
            heard.append(node.key)

    res = fd.run(top, executor=dask_executor, callbacks=[Expansions()])
    wait_for_workers_back(client, gone=[one])
    assert res[top] == "bottom" and res.state(top) == "done"
    assert lines(log).count("nested 1") == 2, "the parent's task was not run again"
    (child,) = res.children(top)
    assert len(res) == 2 and [n.key for n in res] == [top.key, child.key]
    assert heard == [top.key]  # one expansion
    assert (res.state(child), res.attempts(child)) == ("done", 2)
