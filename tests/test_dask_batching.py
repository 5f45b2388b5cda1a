"""Quick ops in batches on the dask executor, against the real scheduler and workers.

Each op reports the dask key of the task it ran in (``distributed.get_worker()``),
so a test sees whether a node ran in a batch (``<op>-batch<i>-<run>``) or alone.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
from collections import Counter

import pytest

import flowdispatch as fd
from flowdispatch.executors.dask import DaskExecutor, quick
from flowdispatch.executors.dask.lower import Lowered
from flowdispatch.testing import append_line as log_line, read_lines as lines

distributed = pytest.importorskip("distributed")

from conftest import wait_for_workers_back, wait_until  # noqa: E402
from test_dask import wait_for_file  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def task_key() -> str:
    return distributed.get_worker().get_current_task()


# -- ops (module level: the workers import this module) ----------------------------------------
@fd.op(quick=True)
def ident(i):
    return i, task_key()


@fd.op(quick=True)
def odd_fails(i):
    if i % 2:
        raise ValueError(f"{i} is odd")
    return i, task_key()


@fd.op(quick=True, retries=2)
def flaky_each(i, directory):
    """Fail the first attempt of every ``i`` (counted in a file per ``i``)."""
    log = os.path.join(directory, str(i))
    log_line(log, "attempt")
    if len(lines(log)) == 1:
        raise OSError(f"first attempt of {i}")
    return i, task_key()


@fd.op(quick=True)
def fails_until(i, flag):
    if i == 3 and not os.path.exists(flag):
        raise ValueError("3 fails until the flag is set")
    return i


@fd.op(quick=True)
def gated(i, gate, log):
    log_line(log, f"{i} {os.getpid()} {task_key()}")
    wait_for_file(gate, 60)
    return i


@fd.op(quick=True, timeout=30)
def timed(i):
    return i  # in a thread of its own, not the task's


@fd.op
def measured(i):
    return i, task_key()


@fd.op
def slow(i):
    threading.Event().wait(0.02)  # 20 ms: more than quick.QUICK
    return i, task_key()


@fd.op
def probed_in_run(i):
    if i == 7:
        raise ValueError("7 fails")
    return i, task_key()


probed, probed_slow = measured.options(name="probed"), slow.options(name="probed_slow")


@fd.op
def probed_leaf(i):
    return i


@fd.op
def probed_pair(a, b):
    return a + b


@fd.op
def probed_child(i):
    """A child of a lazy map, never measured before its test."""
    return i, task_key()


@fd.op
def count_to(n):
    return list(range(n))


@fd.op
def keys_of(pairs):
    return [key for _, key in pairs]


def batched(key: str) -> bool:
    return "-batch" in key


# -- lowering ---------------------------------------------------------------------------------
def test_batches_cover_the_threads_and_are_named_by_the_op():
    from dask.utils import key_split

    leaves = [ident(i) for i in range(40)]
    gathered = fd.collect(leaves)
    target = keys_of(gathered)
    lowered = Lowered(fd.Graph(target), {}, run="r", tag="r")
    assert lowered.batch({target.key}, threads=4) == 40
    batches = [t for t in lowered.tasks.values() if batched(t.key)]
    assert len(batches) == 4 and {key_split(t.key) for t in batches} == {"ident"}
    assert sorted(len(t.func.steps) for t in batches) == [10, 10, 10, 10]
    names = {lowered.node_keys[t.key] for t in batches}
    assert set(lowered.tasks) == {target.key, gathered.key, *names}  # no task per leaf
    assert lowered.tasks[gathered.key].dependencies == {t.key for t in batches}


@pytest.mark.parametrize("options", [{"timeout": 5}, {"resources": {"GPU": 1}},
                                     {"workers": "w1"}, {"quick": False}])
def test_timeouts_resources_placement_and_quick_false_keep_ops_out_of_batches(options):
    alone = ident.options(**options)
    target = keys_of(fd.collect([alone(i) for i in range(20)]))
    lowered = Lowered(fd.Graph(target), {}, run="r", tag="r")
    assert lowered.batch(None, threads=2) == 0


def test_batch_count_and_measurements():
    assert quick.batch_count(10_000, 1e-5, threads=2) == 2
    assert quick.batch_count(2_000, 1e-3, threads=2) == 40
    assert quick.batch_count(3, 0.0, threads=2) == 0
    quick.observe({b"code": [0.001, 0.003]})
    assert quick.measured(b"code") == pytest.approx(0.002)
    assert quick.measured(b"never") is None


def test_quick_option_is_validated():
    with pytest.raises(TypeError, match=r"op option quick= expected True, False or None "
                                        r"\(measure it\), got 'yes'"):
        fd.op(quick="yes")(abs)


# -- on the cluster ---------------------------------------------------------------------------
def test_every_node_keeps_its_state_value_and_error_in_a_batch(dask_executor):
    leaves = [odd_fails(i) for i in range(20)]
    res = fd.run(*leaves, executor=dask_executor)
    for i, leaf in enumerate(leaves):
        assert res.attempts(leaf) == 1 and res.duration(leaf) is not None
        if i % 2:
            assert res.state(leaf) == "failed"
            assert isinstance(res.error(leaf), ValueError) and str(res.error(leaf)) == f"{i} is odd"
        else:
            assert res.state(leaf) == "done" and res[leaf][0] == i and batched(res[leaf][1])


def test_callbacks_hear_each_node_of_a_batch_finish_with_its_own_duration(dask_executor):
    heard: dict[str, float] = {}

    class Finishes(fd.Callback):
        def on_node_finish(self, *, node, duration):
            heard[node.key] = duration

    leaves = [ident(i) for i in range(40)]
    res = fd.run(*leaves, executor=dask_executor, callbacks=[Finishes()])
    assert all(batched(res[leaf][1]) for leaf in leaves)
    assert heard == {leaf.key: res.duration(leaf) for leaf in leaves}
    assert all(seconds > 0 for seconds in heard.values())
    assert len(set(heard.values())) > 1  # each its own, not the batch's


def test_a_failure_in_a_batch_fails_only_its_node_and_what_needs_it(dask_executor):
    leaves = [odd_fails(i) for i in range(16)]
    evens = keys_of(fd.collect(leaves[::2]))
    odds = keys_of(fd.collect(leaves[1::2]))
    res = fd.run(evens, odds, executor=dask_executor)
    assert res.state(evens) == "done" and all(map(batched, res[evens]))
    assert res.state(odds) == "upstream_failed"
    with pytest.raises(ValueError, match=r"^\d*[13579] is odd\n"):
        fd.compute(odds, executor=dask_executor)


def test_retries_are_per_node_inside_a_batch(dask_executor, tmp_path):
    leaves = [flaky_each(i, str(tmp_path)) for i in range(12)]
    values = fd.compute(*leaves, executor=dask_executor)
    assert [v[0] for v in values] == list(range(12)) and all(batched(v[1]) for v in values)
    again = tmp_path / "again"
    again.mkdir()
    leaves = [flaky_each(i, str(again)) for i in range(12)]
    res = fd.run(*leaves, executor=dask_executor)
    assert res.ok and [res.attempts(leaf) for leaf in leaves] == [2] * 12


def test_rerun_after_a_failure_in_a_batch(dask_executor, tmp_path):
    flag = str(tmp_path / "flag")
    leaves = [fails_until(i, flag) for i in range(10)]
    res = fd.run(*leaves, executor=dask_executor)
    assert [res.state(leaf) for leaf in leaves].count("failed") == 1
    open(flag, "w").close()
    again = res.rerun(executor=dask_executor)
    assert again.ok and [again[leaf] for leaf in leaves] == list(range(10))


def test_timeout_keeps_an_op_out_of_batches_on_the_cluster(dask_executor, dask_client):
    with distributed.get_task_stream(client=dask_client) as stream:
        values = fd.compute(*[timed(i) for i in range(10)], executor=dask_executor)
    assert list(values) == list(range(10))
    keys = [task["key"] for task in stream.data]
    assert len([k for k in keys if k.startswith("timed-")]) == 10 and not any(map(batched, keys))


def test_measurement_batches_a_quick_op_and_never_a_slow_one(dask_executor):
    for _ in range(2):  # the first run measures, the second uses it
        quick_values = fd.compute(*[measured(i) for i in range(20)], executor=dask_executor)
        slow_values = fd.compute(*[slow(i) for i in range(20)], executor=dask_executor)
    assert all(batched(v[1]) for v in quick_values)
    assert not any(batched(v[1]) for v in slow_values)


def test_a_probe_batches_a_quick_op_in_its_first_run_and_never_a_slow_one(dask_executor):
    size = max(2, quick.PROBE * sum(dask_executor.client.nthreads().values()))
    keys = fd.compute(keys_of(fd.collect([probed(i) for i in range(40)])), executor=dask_executor)[0]
    assert sum(not batched(key) for key in keys) == size  # the probe, then batches
    assert quick.measured(next(iter(Lowered(fd.Graph(probed(0)), {}, None).kinds.values()))[0]) \
        is not None
    slow_values = fd.compute(*[probed_slow(i) for i in range(20)], executor=dask_executor)
    assert [v[0] for v in slow_values] == list(range(20))
    assert not any(batched(v[1]) for v in slow_values)


def test_a_probe_in_run_keeps_every_node_state_and_error(dask_executor):
    leaves = [probed_in_run(i) for i in range(30)]
    res = fd.run(keys_of(fd.collect(leaves)), *leaves, executor=dask_executor)
    assert [res.state(leaf) for leaf in leaves].count("failed") == 1
    assert isinstance(res.error(leaves[7]), ValueError)
    assert all(res[leaf][0] == i for i, leaf in enumerate(leaves) if i != 7)
    assert 0 < sum(batched(res[leaf][1]) for i, leaf in enumerate(leaves) if i != 7) < 29
    assert all(res.attempts(leaf) == 1 and res.duration(leaf) is not None for leaf in leaves)


def test_children_of_an_op_never_measured_are_probed_then_batched(dask_executor):
    """A lazy map's children, of an op no run has measured: a few run alone, and once
    they have, the rest go in batches (the probe of the run's first graph, on its growth)."""
    mapped = probed_child.map(count_to(40))
    res = fd.run(mapped, executor=dask_executor)
    children = res.children(mapped)
    assert [res[child][0] for child in children] == list(range(40))
    assert 0 < sum(batched(res[child][1]) for child in children) < 40
    assert res[mapped] == [res[child] for child in children]


def test_a_worker_killed_mid_batch_loses_the_batch_which_runs_again(dask_client, tmp_path):
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    leaves = [gated(i, gate, log) for i in range(40)]
    pids = dask_client.run(os.getpid)  # worker address -> pid
    starts: Counter = Counter()

    class Starts(fd.Callback):
        def on_node_start(self, *, node, attempt):
            starts[node.key] += 1

    executor = DaskExecutor(client=dask_client)
    with executor, concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(fd.run, *leaves, executor=executor, callbacks=[Starts()])
        try:
            def running_everywhere():
                return {int(line.split()[1]) for line in lines(log)} >= set(pids.values())
            wait_until(lambda: running_everywhere() and len(starts) >= len(lines(log)), 60,
                       "batches running on both workers, and their starts reported")
            victim = next(iter(pids))
            os.kill(pids[victim], signal.SIGKILL)
        finally:
            open(gate, "w").close()
        res = future.result(timeout=90)
    assert res.ok and [res[leaf] for leaf in leaves] == list(range(40))
    entries = [line.split() for line in lines(log)]
    assert all(batched(key) for _, _, key in entries)
    killed = {int(i) for i, pid, _ in entries if int(pid) == pids[victim]}
    runs = Counter(int(i) for i, _, _ in entries)
    assert killed and all(runs[i] >= 2 for i in killed), "the lost batch did not run again"
    assert all(res.attempts(leaves[i]) >= 2 for i in killed)
    wait_for_workers_back(dask_client, gone=[victim])


def test_a_probe_of_an_op_that_needs_another_probed_op_does_not_wait_for_ever(dask_executor):
    leaves = [probed_leaf(i) for i in range(40)]
    pairs = [probed_pair(a, b) for a, b in zip(leaves[::2], leaves[1::2])]
    assert fd.compute(*pairs, executor=dask_executor) == tuple(range(1, 79, 4))
