"""The dask executor against a real scheduler and real worker processes (see conftest.py).

Ops count their attempts in files (workers are other processes) and wait on
files that the test creates, never on fixed sleeps. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

import flowdispatch as fd
from flowdispatch.testing import append_line as log_line, read_lines as lines
from workloads import DASK_CLUSTER_RESULT, dask_cluster, dask_do
from flowdispatch.executors.dask import DaskExecutor

distributed = pytest.importorskip("distributed")

from conftest import wait_for_workers_back, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(120)


# -- ops (module level: the workers import this module) ----------------------------------


def wait_for_file(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)


@fd.op
def inc(x):
    return x + 1


@fd.op
def fails_if_odd(x):
    if x % 2:
        raise ValueError(f"{x} is odd")
    return x


@fd.op
def double(x):
    return 2 * x


@fd.op
def total(xs):
    return sum(xs)


@fd.op
def record(log, label, *deps):
    log_line(log, label)
    return label


@fd.op
def gated(i, gate, log):
    """Log ``i pid``, then return ``i`` once the gate file exists."""
    log_line(log, f"{i} {os.getpid()}")
    wait_for_file(gate)
    return i


@fd.op
def flaky(log, failures, error="OSError"):
    """Fail the first ``failures`` attempts (counted in ``log``), then return the attempt count."""
    log_line(log, "attempt")
    attempt = len(lines(log))
    if attempt <= failures:
        raise {"OSError": OSError, "ValueError": ValueError}[error](f"attempt {attempt} failed")
    return attempt


@fd.op
def broken(x):
    raise ValueError(f"broken on {x}")


@fd.op
def big(n):
    return b"x" * n


@fd.op
def size(data):
    return len(data)


@fd.op
def where():
    return distributed.get_worker().address


@fd.op
def takes(x, thing):
    return x


@fd.op
def first_size(pair):
    return len(pair[0]) + pair[1]


@fd.op
def poison(x):
    os._exit(1)  # takes its worker down


# -- helpers ------------------------------------------------------------------------------
def scheduler_keys(client, keys):
    """The scheduler's tasks for the nodes with ``keys`` (a run's are ``<node key>-<run>``)."""
    wanted = set(keys)
    return client.run_on_scheduler(lambda dask_scheduler: sorted(
        k for k in dask_scheduler.tasks if k in wanted or k.rsplit("-", 1)[0] in wanted))


# -- conformance ---------------------------------------------------------------------------
def test_conformance_suite(dask_client):
    from flowdispatch.testing import check_executor

    check_executor(lambda: DaskExecutor(client=dask_client))


def test_conformance_suite_by_address_and_embedded(dask_processes):
    from flowdispatch.testing import check_executor

    check_executor(lambda: DaskExecutor(dask_processes.address))
    check_executor(lambda: DaskExecutor(n_workers=1, threads_per_worker=2))


# -- Dispatcher.jl workloads -----------------------------------------------------------------
def test_dask_do_gives_357_with_node_keys_on_the_cluster(dask_executor, dask_client):
    a, result = dask_do(delay=0.05)
    assert fd.compute(result, executor=dask_executor) == (357,)
    res = fd.run(result, executor=dask_executor)
    assert res[result] == 357
    assert res.counts == {"done": len(res)}
    assert all(res.attempts(n) == 1 for n in res.graph)
    assert res.duration(a[0]) >= 0.05
    with pytest.raises(KeyError, match="released"):  # intermediates stay on the workers
        res[a[0]]
    prefixes = dask_client.run_on_scheduler(
        lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert {"slowinc", "slowadd", "slowsum", "add"} <= set(prefixes)


def test_dask_cluster_workload(dask_executor):
    best = dask_cluster()
    res = fd.run(best, executor=dask_executor)
    assert res[best] == DASK_CLUSTER_RESULT
    assert res.counts == {"done": 499}  # 100 + 1 + 100 + 96 rolls used + 200 + collect + reduce


# -- futures and the dask collection protocol -----------------------------------------------
def test_submit_persist_and_collections(dask_executor, dask_client):
    import dask

    a = inc(1)
    b = double(a)
    futures = fd.submit(a, b, client=dask_client)
    assert set(futures) == {a, b}
    assert futures[a].key == a.key and futures[b].key == b.key
    assert futures[b].result(timeout=30) == 4

    (persisted,) = fd.persist(b, executor=dask_executor).values()
    assert persisted.key == b.key and persisted.result(timeout=30) == 4

    c = inc(b)
    assert dask_client.compute(c).result(timeout=30) == 5
    assert dask.compute(c, scheduler=dask_client) == (5,)

    bad = broken(a)
    (future,) = dask_executor.submit(bad).values()
    with pytest.raises(ValueError, match="broken on 2") as info:
        future.result(timeout=30)
    assert any(bad.key in note for note in info.value.__notes__)


# -- retries ----------------------------------------------------------------------------------
def test_retries_count_attempts_across_processes(dask_executor, tmp_path):
    log = str(tmp_path / "flaky")
    node = flaky.options(retries=2)(log, 2)
    res = fd.run(node, executor=dask_executor)
    assert res[node] == 3
    assert lines(log) == ["attempt"] * 3
    assert res.attempts(node) == 3

    log = str(tmp_path / "other")
    node = flaky.options(retries=3, retry_on=(OSError,))(log, 1, error="ValueError")
    res = fd.run(node, executor=dask_executor)
    assert res.state(node) == "failed"
    assert isinstance(res.error(node), ValueError)
    assert lines(log) == ["attempt"]
    assert res.attempts(node) == 1


def test_timeout_fails_the_node_and_the_run_goes_on(dask_executor, tmp_path):
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    stuck = gated.options(timeout=0.3)(0, gate, log)
    other = inc(1)
    try:
        res = fd.run(stuck, other, executor=dask_executor)
    finally:
        open(gate, "w").close()  # the abandoned thread ends
    assert res.state(stuck) == "failed" and res[other] == 2
    assert isinstance(res.error(stuck), fd.OpTimeoutError)
    assert res.error(stuck).args[0].startswith(f"node {stuck.key!r} ran longer than its "
                                               "timeout of 0.3 s; it was abandoned")
    assert 0.3 <= res.duration(stuck) < 5
    quick = inc.options(timeout=5)(41)
    assert fd.compute(quick, executor=dask_executor) == (42,)


# -- memory -----------------------------------------------------------------------------------
def test_large_intermediate_stays_on_the_workers(dask_executor, dask_client):
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        data = big(300_000_000)
        length = size(data)
        res = fd.run(length, executor=dask_executor)
    finally:
        done.set()
        sampler.join(10)
    assert res[length] == 300_000_000
    assert peak[0] - baseline < 100_000_000, f"the client grew by {(peak[0] - baseline) / 1e6:.0f} MB"
    wait_until(lambda: not scheduler_keys(dask_client, [data.key, length.key]), 10,
               "the scheduler to release the run's values")


# -- worker loss ------------------------------------------------------------------------------
def test_killing_a_worker_mid_run_gives_exact_results(dask_executor, dask_client, tmp_path):
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    stage = [gated(i, gate, log) for i in range(100)]
    doubled = [double(s) for s in stage]
    result = total(fd.collect(doubled))
    pids = dask_client.run(os.getpid)  # worker address -> pid
    outcome: dict = {}

    def run():
        try:
            outcome["res"] = fd.run(result, executor=dask_executor)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    victim = None
    try:
        def running_everywhere():
            seen = {int(line.split()[1]) for line in lines(log)}
            return seen >= set(pids.values())
        wait_until(running_everywhere, 60, "ops running on both workers")
        victim = next(iter(pids))
        os.kill(pids[victim], signal.SIGKILL)
    finally:
        open(gate, "w").close()
        runner.join(90)
    assert not runner.is_alive(), "the run did not finish"
    assert "error" not in outcome, outcome.get("error")
    res = outcome["res"]
    assert res.ok
    assert res[result] == 2 * sum(range(100))
    killed = [line.split()[0] for line in lines(log) if int(line.split()[1]) == pids[victim]]
    runs = Counter(line.split()[0] for line in lines(log))
    assert killed and all(runs[i] >= 2 for i in killed), "the lost tasks were not run again"
    wait_for_workers_back(dask_client, gone=[victim])


# -- failures ---------------------------------------------------------------------------------
def test_failure_states_errors_and_partial_results(dask_executor, tmp_path):
    log = str(tmp_path / "log")
    root = record(log, "root")
    bad = broken(root)
    child = inc(bad)
    grandchild = double(child)
    other = record(log, "other", root)
    res = fd.run(grandchild, other, executor=dask_executor)
    assert res.counts == {"done": 2, "failed": 1, "upstream_failed": 2}
    assert res.failed == (bad,)
    error = res.error(bad)
    assert type(error) is ValueError and str(error) == "broken on root"
    assert f"flowdispatch: raised by node {bad.key!r}" in error.__notes__
    for node in (child, grandchild):
        up = res.error(node)
        assert isinstance(up, fd.UpstreamError) and up.upstream == bad.key
    with pytest.raises(ValueError, match="broken on root"):
        res[grandchild.dependencies[0].dependencies[0]]
    assert res[other] == "other"
    assert res[root] == "root"  # kept: the failed node needs it
    assert sorted(lines(log)) == ["other", "root"]

    with pytest.raises(ValueError, match="broken on root") as info:
        fd.compute(grandchild, executor=dask_executor)
    assert f"flowdispatch: raised by node {bad.key!r}" in info.value.__notes__
    assert info.value.__traceback__ is not None


def test_rerun_after_failure_reuses_completed_values(dask_executor, tmp_path):
    log, attempts = str(tmp_path / "log"), str(tmp_path / "attempts")
    a = record(log, "a")
    b = flaky(attempts, 1)
    c = record(log, "c", a, b)
    res = fd.run(c, executor=dask_executor)
    assert (res.state(a), res.state(b), res.state(c)) == ("done", "failed", "upstream_failed")
    again = res.rerun(executor=dask_executor)
    assert again.ok and again[c] == "c"
    assert lines(attempts) == ["attempt"] * 2 and again.attempts(b) == 2
    assert lines(log) == ["a", "c"]  # a ran once: its value was kept and reused


# -- interrupts -------------------------------------------------------------------------------
class Interrupt(fd.Callback):
    def __init__(self, key):
        self.key = key

    def on_node_finish(self, *, node, duration):
        if node.key == self.key:
            raise KeyboardInterrupt


def test_keyboard_interrupt_cancels_the_run_on_the_cluster(dask_executor, dask_client, tmp_path):
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    first = inc.options(priority=10)(0)
    waiting = [gated(i, gate, log) for i in range(50)]
    keys = [first.key, *(n.key for n in waiting)]
    try:
        with pytest.raises(KeyboardInterrupt):
            fd.run(first, waiting, executor=dask_executor, callbacks=[Interrupt(first.key)])
        wait_until(lambda: not scheduler_keys(dask_client, keys), 5,
                   "no task of the interrupted run left on the scheduler")
        started = len(lines(log))
    finally:
        open(gate, "w").close()
    assert started <= 4, f"{started} ops started; at most the 4 worker threads' were running"


# -- connecting ---------------------------------------------------------------------------------
def test_embedded_cluster_runs_on_loopback_and_closes(tmp_path):
    psutil = pytest.importorskip("psutil")
    me = psutil.Process()
    def children():  # multiprocessing's resource tracker outlives any cluster (by design)
        found = set()
        for p in me.children(recursive=True):
            try:
                if "resource_tracker" not in " ".join(p.cmdline()):
                    found.add(p.pid)
            except psutil.Error:  # it exited meanwhile
                pass
        return found

    def listening(procs):
        return {(c.laddr.ip, c.laddr.port) for p in procs for c in p.net_connections("inet")
                if c.status == psutil.CONN_LISTEN}

    before, sockets = children(), listening([me])
    executor = DaskExecutor(n_workers=1, threads_per_worker=2)
    assert executor.client is None  # started lazily
    with executor:
        assert fd.compute(double(inc(1)), executor=executor) == (4,)
        assert executor.cluster is not None
        procs = [me, *(p for p in me.children(recursive=True) if p.pid not in before)]
        assert len(procs) > 1  # the worker runs in its own process
        opened = listening(procs) - sockets  # scheduler, dashboard, nanny, worker
        assert len(opened) >= 4 and {ip for ip, _ in opened} == {"127.0.0.1"}
        saturation = executor.client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.WORKER_SATURATION)
        assert saturation == float("inf")
        waits = executor.client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.no_workers_timeout)
        assert waits == 60
    assert executor.client is None and executor.cluster is None
    executor.close()  # twice is fine
    wait_until(lambda: not (children() - before), 20,
               "the embedded cluster's processes to exit")


def test_a_large_argument_travels_as_a_task_argument_not_in_the_call(dask_executor):
    from flowdispatch.executors.dask.lower import SCATTER_BYTES, Lowered

    data = b"x" * (SCATTER_BYTES + 1)
    whole, part = size(data), takes(inc(1), thing=data)
    nested = first_size([data, inc(1)])  # beside a node, in a list
    lowered = Lowered(fd.Graph(whole, part, nested), {}, run=None)
    for node in (whole, part, nested):  # pickled once, with the graph, not copied into the call
        task = lowered.tasks[node.key]
        assert len(task.func.call) < 1000 and any(a is data for a in task.args)
    assert fd.compute(whole, part, nested, executor=dask_executor) == (
        len(data), 2, len(data) + 2)
    assert fd.run(whole, part, nested, executor=dask_executor).ok


def test_an_in_process_cluster_links_to_its_dashboard_where_it_listens():
    import urllib.request
    from urllib.parse import urlsplit

    with DaskExecutor(n_workers=1, processes=False) as executor:
        link = executor.connect().dashboard_link
        assert urlsplit(link).hostname == "127.0.0.1"
        assert executor.cluster.dashboard_link == link
        health = link.replace("/status", "/health")
        with urllib.request.urlopen(health, timeout=10) as answer:  # something listens there
            assert answer.read() == b"ok"
        assert fd.compute(inc(1), executor=executor) == (2,)


def test_an_op_that_kills_its_worker_fails_with_killed_worker():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        executor = DaskExecutor(n_workers=1, threads_per_worker=1)
        executor.connect()  # the embedded scheduler reads the setting now
    with executor:
        a = inc(1)
        bad = poison(a)
        after = inc(bad)
        res = fd.run(after, executor=executor)
        assert (res.state(a), res.state(bad), res.state(after)) == (
            "done", "failed", "upstream_failed")
        error = res.error(bad)
        assert type(error).__name__ == "KilledWorker"
        assert f"flowdispatch: raised by node {bad.key!r}" in error.__notes__
        assert res.attempts(bad) == 1
        assert fd.compute(inc(5), executor=executor) == (6,)  # the worker came back


def test_dead_address_fails_within_the_connect_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    start = time.monotonic()
    with DaskExecutor(address, connect_timeout=2) as executor:
        with pytest.raises(fd.ExecutorError, match=f"could not connect to a dask scheduler at "
                                                    f"'{address}' within 2 s.*dask scheduler"):
            fd.compute(inc(1), executor=executor)
    assert time.monotonic() - start < 10


def test_executor_given_as_client_or_address(dask_processes, dask_client):
    assert fd.compute(inc(1), executor=dask_client) == (2,)
    assert dask_client.status == "running"  # a given client is not closed
    assert fd.compute(inc(2), executor=dask_processes.address) == (3,)
    with pytest.raises(TypeError, match="expected address= or client=, got both"):
        DaskExecutor("tcp://127.0.0.1:1", client=dask_client)
    with pytest.raises(TypeError, match="only to the embedded cluster"):
        DaskExecutor(client=dask_client, n_workers=2)


# -- bad input ----------------------------------------------------------------------------------
def test_unpicklable_argument_fails_before_submission(dask_executor, dask_client, tmp_path):
    log = str(tmp_path / "log")
    upstream = record(log, "upstream")
    node = takes(upstream, threading.Lock())
    pattern = f"node '{node.key}': argument 1 \\(a lock\\) cannot be pickled"
    with pytest.raises(fd.SerializationError, match=pattern) as info:
        fd.compute(node, executor=dask_executor)
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(fd.SerializationError, match=pattern):
        dask_executor.submit(node)
    other = record(log, "other")
    res = fd.run(node, other, executor=dask_executor)
    assert res.state(node) == "failed" and isinstance(res.error(node), fd.SerializationError)
    assert res[other] == "other"
    assert lines(log) == ["other"]  # nothing that only the broken node needed ran
    assert not scheduler_keys(dask_client, [node.key, upstream.key])


# -- scheduling hints and data ------------------------------------------------------------------
def test_annotations_reach_the_scheduler(dask_executor, dask_client):
    first = sorted(dask_client.scheduler_info(n_workers=-1)["workers"])[0]
    pinned = where.options(workers=first)()
    assert fd.compute(pinned, executor=dask_executor) == (first,)

    hinted = inc.options(resources={"FOO": 1}, priority=7, workers=[first],
                         allow_other_workers=True)(1)
    (future,) = dask_executor.submit(hinted).values()  # no worker has FOO: it waits
    try:
        def restrictions(dask_scheduler, key=hinted.key):
            ts = dask_scheduler.tasks.get(key)
            return ts and (ts.resource_restrictions, sorted(ts.worker_restrictions or ()),
                           ts.loose_restrictions, ts.priority[0])
        found = wait_until(lambda: dask_client.run_on_scheduler(restrictions), 10,
                           "the task on the scheduler")
        assert found == ({"FOO": 1}, [first], True, -7)
    finally:
        dask_client.cancel([future])


def test_overrides_become_data_on_the_cluster(dask_executor, tmp_path):
    log = str(tmp_path / "log")
    small, large = record(log, "small"), record(log, "large")
    node = size(small) + size(large)
    res = fd.run(node, executor=dask_executor,
                 overrides={small: "abc", large: b"y" * 3_000_000})
    assert res[node] == 3_000_003
    assert res.state(small) == res.state(large) == "skipped"
    assert lines(log) == []


class LoadsOnlyHere:
    """Unpickles only in the process that pickled it (so fails on a worker)."""

    def __reduce__(self):
        return (loads_only_in, (os.getpid(),))


def loads_only_in(pid):
    if os.getpid() != pid:
        raise RuntimeError("only loads where it was made")
    return LoadsOnlyHere()


def test_a_task_failing_outside_its_op_is_found(dask_executor):
    data = fd.value(0)
    first = inc(data)
    second = double(first)
    res = fd.run(second, executor=dask_executor, overrides={data: LoadsOnlyHere()})
    assert res.state(data) == "skipped"
    assert res.state(first) == "failed" and res.state(second) == "upstream_failed"
    error = res.error(first)
    assert isinstance(error, RuntimeError) and "only loads where it was made" in str(error)
    assert f"flowdispatch: raised by node {first.key!r}" in error.__notes__
    with pytest.raises(RuntimeError, match="only loads where it was made"):
        fd.compute(second, executor=dask_executor, overrides={data: LoadsOnlyHere()})


def test_import_flowdispatch_does_not_import_distributed():
    code = "import sys, flowdispatch; assert 'distributed' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_persist_needs_a_cluster_that_outlives_the_futures():
    node = fd.op(sum)([1, 2])
    for executor in (None, "dask"):
        with pytest.raises(TypeError, match=r"persist: expected a cluster that outlives the "
                                            r"futures .* got (None|'dask')"):
            fd.persist(node, executor=executor)


@pytest.mark.parametrize("call", ["persist", "submit"])
def test_persist_and_submit_refuse_an_address(call):
    node = fd.op(sum)([1, 2])
    keyword = "executor" if call == "persist" else "client"
    before = threading.active_count()
    with pytest.raises(TypeError, match=rf"^{call}: expected a distributed.Client or an "
                                        r"fd.DaskExecutor that outlives the futures, got the "
                                        r"address 'tcp://127.0.0.1:1': .* Connect one yourself"):
        getattr(fd, call)(node, **{keyword: "tcp://127.0.0.1:1"})
    assert threading.active_count() == before


@fd.op
def scheduler_of_worker():
    from distributed import get_worker

    return get_worker().scheduler.address


def test_the_dask_scheduler_address_setting_is_honoured(dask_processes):
    import dask.config

    with dask.config.set({"scheduler-address": dask_processes.address}):
        executor = DaskExecutor()
        assert executor.address == dask_processes.address
        with executor:
            assert fd.compute(scheduler_of_worker(), executor=executor) == (
                dask_processes.address,)
            assert executor.cluster is None
        assert fd.compute(scheduler_of_worker(), executor="dask") == (dask_processes.address,)
        assert DaskExecutor(n_workers=1).address is None  # cluster options: embedded
    assert DaskExecutor().address is None


def test_the_live_graph_follows_a_run_on_the_cluster(dask_executor):
    from flowdispatch.view.live import LiveGraph
    from test_live import STEPS, Screen, histories

    screen = Screen()
    nodes = [inc(i) for i in range(6)]
    targets = [fails_if_odd(n) for n in nodes] + [total(nodes)]
    res = fd.run(targets, executor=dask_executor, callbacks=[LiveGraph(screen, interval=0.0)])
    assert res.counts == {"done": 10, "failed": 3}
    assert set(screen.frames[0].states.values()) == {"pending"}
    assert screen.frames[-1].final and screen.frames[-1].states == res.states
    seen = histories(screen.frames)
    for key, states in seen.items():
        assert set(zip(states, states[1:])) <= STEPS, f"{key}: {states}"
        assert states[-1] == res.states[key]


def test_compute_folds_linear_chains_and_keeps_per_node_states(dask_executor):
    from flowdispatch.executors.dask.lower import Lowered

    class Seen(fd.Callback):
        def __init__(self):
            self.finished, self.failed = [], []

        def on_node_finish(self, *, node, duration):
            self.finished.append(node.key)

        def on_node_error(self, *, node, error):
            self.failed.append(node.key)

    chain = [inc(0)]
    for _ in range(199):
        chain.append(inc(chain[-1]))
    side = double(chain[99])  # a second user of chain[99]: the chain breaks there
    lowered = Lowered(fd.Graph(chain[-1], side), {}, run=None)
    assert lowered.fuse({chain[-1].key, side.key}) == 198  # 200 + 1 tasks -> 3
    assert set(lowered.tasks) == {chain[99].key, chain[-1].key, side.key}

    seen = Seen()
    assert fd.compute(chain[-1], side, executor=dask_executor, callbacks=[seen]) == (200, 200)
    assert sorted(seen.finished) == sorted(n.key for n in [*chain, side])

    bad = fails_if_odd(chain[50])  # 51 is odd: fails in the middle of a folded chain
    after = inc(inc(bad))
    seen = Seen()
    with pytest.raises(ValueError, match="51 is odd") as info:
        fd.compute(after, executor=dask_executor, callbacks=[seen])
    assert f"flowdispatch: raised by node {bad.key!r}" in info.value.__notes__
    assert seen.failed == [bad.key]
    assert set(seen.finished) == {n.key for n in chain[:51]}


def test_fusing_can_be_turned_off(dask_client):
    from distributed import get_task_stream

    with pytest.raises(TypeError, match=r"fuse: expected True or False, got 'no'"):
        DaskExecutor(client=dask_client, fuse="no")
    chain = [inc(0)]
    for _ in range(9):
        chain.append(inc(chain[-1]))
    for fuse, ran in ((True, [chain[-1]]), (False, chain)):
        with DaskExecutor(client=dask_client, fuse=fuse) as executor, \
                get_task_stream(dask_client) as stream:
            assert fd.compute(chain[-1], executor=executor) == (10,)
        # the tasks of this chain that reached the workers (a run's keys are node key + suffix)
        seen = {n.key for n in chain for task in stream.data if task["key"].startswith(n.key + "-")}
        assert seen == {n.key for n in ran}


def test_fail_fast_run_without_watchers_still_records_every_node(dask_executor):
    # Nobody watches the nodes, so only the targets' events wake the run; the
    # others must still be in the Results, in order, when it ends.
    leaves = [inc(i) for i in range(50)]
    top = fd.op(lambda *xs: sum(xs), name="total")(*leaves)
    res = dask_executor.run(fd.Graph(top), fail_fast=True)
    assert res[top] == sum(range(1, 51))
    nodes = [*leaves, top]
    assert [res.state(n) for n in nodes] == ["done"] * 51
    assert all(res.duration(n) is not None for n in nodes)
    assert [res.attempts(n) for n in nodes] == [1] * 51


def test_the_inbox_wakes_the_run_only_for_what_it_waits_on():
    from flowdispatch.executors.dask.client import _Inbox

    inbox = _Inbox(lambda key, kind: kind != "done" or key == "target")
    inbox.put(("a", "done", 1, 0.1, None))
    inbox.put(("b", "done", 1, 0.1, None))
    assert not inbox.wake.is_set()
    inbox.put(("target", "done", 1, 0.1, None))
    assert inbox.wake.is_set()
    assert [e[0] for e in inbox.take(0)] == ["a", "b", "target"]  # in order, all at once
    assert not inbox.wake.is_set() and inbox.take(0) == []
    inbox.put(("c", "failed", 1, 0.1, ValueError()))
    assert inbox.wake.is_set()


def test_the_graph_reaches_the_client_named_without_tokenizing_its_tasks(monkeypatch):
    # Client.get names a plain graph by tokenizing every task (tens of µs each);
    # the lowered graph comes with a name of its own.
    from flowdispatch.executors.dask.lower import Lowered
    from flowdispatch.executors.dask.worker import Step

    pickled = []
    monkeypatch.setattr(Step, "__reduce__", lambda self: pickled.append(self.key) or (Step, ()))
    lowered = Lowered(fd.Graph(inc(inc(1))), {}, run=None)
    first, second = lowered.expression(), lowered.expression()
    assert pickled == []  # dask's tokenize pickles objects it does not know
    assert first._name != second._name
    assert first.__dask_keys__() == list(lowered.graph())


@fd.op(resources={"GPU": 1})
def on_a_gpu(x):
    return x


def test_tasks_no_worker_can_run_fail_instead_of_waiting_for_ever():
    import dask.config

    # The embedded cluster waits a minute by default; a test waits half a second.
    with dask.config.set({"distributed.scheduler.no-workers-timeout": "0.5s"}), \
            DaskExecutor(n_workers=1, processes=False) as executor:
        started = time.monotonic()
        res = fd.run(inc(on_a_gpu(1)), executor=executor)
        assert time.monotonic() - started < 30
    gpu = next(n for n in res.graph if n.name == "on_a_gpu")
    assert res.state(gpu) == "failed" and res.counts == {"failed": 1, "upstream_failed": 1}
    error = res.error(gpu)
    assert type(error).__name__ == "NoValidWorkerError"
    assert "GPU" in str(error)


def test_plain_tcp_to_another_machine_warns_and_security_is_passed_on(dask_processes):
    import warnings

    with pytest.warns(fd.SecurityWarning, match=r"192\.0\.2\.1:8786.*plain TCP.*tls://"):
        DaskExecutor("tcp://192.0.2.1:8786")  # connects lazily: nothing is sent
    with pytest.warns(fd.SecurityWarning):
        DaskExecutor("192.0.2.1:8786")  # tcp is dask's default protocol
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for quiet in (dask_processes.address, "tcp://localhost:8786", "tls://192.0.2.1:8786",
                      "tcp://[::1]:8786"):
            DaskExecutor(quiet)
    with pytest.raises(TypeError, match="security=True makes temporary credentials"):
        DaskExecutor("tls://192.0.2.1:8786", security=True)
    with pytest.raises(TypeError, match="the given client holds its own credentials"):
        DaskExecutor(client=object.__new__(distributed.Client), security=True)


def test_an_embedded_cluster_with_temporary_tls_credentials():
    with DaskExecutor(n_workers=1, processes=False, security=True) as executor:
        assert fd.compute(inc(1), executor=executor) == (2,)
        assert executor.client.scheduler.address.startswith("tls://")


@fd.op(cache=True)
def counted(log, x):
    log_line(log, "counted")
    return x + 1


@fd.op
def waits_at_gate(path, x):
    open(path + ".started", "w").close()
    wait_for_file(path, 60)
    return x


def test_losing_the_scheduler_raises_and_the_cache_keeps_what_completed(tmp_path):
    from conftest import DaskProcesses

    log, gate = str(tmp_path / "log"), str(tmp_path / "gate")

    def workflow():
        return inc(waits_at_gate(gate, counted(log, 1)))

    def cluster(name):
        (tmp_path / name).mkdir()
        processes = DaskProcesses(tmp_path / name)
        processes.start()
        return processes

    with fd.config.set(cache_dir=str(tmp_path / "cache")):
        first, outcome = cluster("first"), {}
        try:
            with DaskExecutor(first.address) as executor:
                def go():
                    try:
                        fd.compute(workflow(), executor=executor)
                    except BaseException as exc:  # noqa: BLE001 - looked at below
                        outcome["error"] = exc

                thread = threading.Thread(target=go)
                thread.start()
                wait_until(lambda: os.path.exists(gate + ".started"), 60, "the gated op")
                first.processes[0].kill()  # the scheduler, mid-run
                thread.join(60)
                assert not thread.is_alive()
        finally:
            first.stop()
        error = outcome["error"]
        assert isinstance(error, fd.ExecutorError), repr(error)
        assert "the dask cluster lost this run" in str(error) and "cache=True" in str(error)

        open(gate, "w").close()
        second = cluster("second")
        try:
            with DaskExecutor(second.address) as executor:
                target = workflow()
                res = fd.run(target, executor=executor)
        finally:
            second.stop()
    assert res[target] == 3 and res.counts == {"cached": 1, "done": 2}
    assert lines(log) == ["counted"]  # it completed before the loss, and was not run again


def test_a_cluster_that_loses_every_worker_ends_the_run_naming_what_could_not_run(tmp_path):
    import psutil
    from conftest import DaskProcesses

    cluster = DaskProcesses(tmp_path, n_workers=1)
    cluster.start()
    gate, log = str(tmp_path / "gate"), str(tmp_path / "log")
    try:
        with DaskExecutor(cluster.address, no_workers_timeout=1.0) as executor:
            executor.connect().wait_for_workers(1, timeout=60)
            first = inc(1)
            stuck = gated(first, gate, log)
            last = inc(stuck)
            outcome: dict = {}
            runner = threading.Thread(target=lambda: outcome.update(
                res=fd.run(last, first, executor=executor)))
            runner.start()
            wait_until(lambda: lines(log), 60, "the gated op to start")
            worker = psutil.Process(cluster.processes[1].pid)  # the nanny and its worker
            for process in [*worker.children(recursive=True), worker]:
                process.kill()
            runner.join(60)
            assert not runner.is_alive(), "the run hung without workers"
    finally:
        open(gate, "w").close()
        cluster.stop()
    res = outcome["res"]
    assert (res.state(first), res.state(stuck), res.state(last)) == (
        "done", "failed", "upstream_failed")
    error = res.error(stuck)
    assert isinstance(error, fd.ExecutorError)
    assert error.args[0].startswith(
        f"the dask cluster has had no worker for 1 s, so node {stuck.key!r} could not run")
    assert repr(last.key) in str(error) and "no_workers_timeout" in str(error)


def test_no_workers_timeout_is_checked():
    with pytest.raises(ValueError, match=r"no_workers_timeout: expected seconds > 0, got 0"):
        DaskExecutor(no_workers_timeout=0)


@fd.op
def dies_once(marker, x):
    """Kill this worker the first time (when ``marker`` does not exist yet), then return ``x``."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_a_run_cut_short_by_its_worker_dying_counts_as_an_attempt(dask_executor, dask_client,
                                                                  tmp_path):
    pids = dask_client.run(os.getpid)
    node = inc(dies_once(str(tmp_path / "marker"), inc(1)))
    killer = next(n for n in fd.Graph(node) if n.name == "dies_once")
    res = fd.run(node, executor=dask_executor)
    assert res[node] == 3
    assert res.attempts(killer) == 2
    assert [res.attempts(n) for n in res.graph if n is not killer] == [1, 1]
    wait_for_workers_back(dask_client, gone=set(pids) - set(dask_client.run(os.getpid)))



def a_lock(x):
    return threading.Lock()


def passes(x):
    return x


def test_an_unpicklable_return_value_fails_its_node_and_dependents_never_hang(
        dask_executor, dask_client):
    one, other = sorted(dask_client.scheduler_info(n_workers=-1)["workers"])[:2]
    lock = fd.op(a_lock, workers=[one])(1)
    user = fd.op(passes, workers=[other])(lock)  # the value would travel between workers
    res = fd.run(user, lock, executor=dask_executor)
    assert (res.state(lock), res.state(user)) == ("failed", "upstream_failed")
    error = res.error(lock)
    assert isinstance(error, fd.SerializationError)
    assert str(error).startswith(f"node {lock.key!r} returned a value of type lock that could "
                                 "not be pickled")
    with pytest.raises(fd.SerializationError, match=r"node 'a_lock-.*' returned a value of type lock"):
        fd.compute(fd.op(a_lock)(2), executor=dask_executor)


@fd.op
def fails_with_source(x):
    doubled = 2 * x
    raise ValueError(f"failed on {doubled}")


def test_op_failures_show_their_source_and_stay_out_of_the_worker_log(
        dask_executor, dask_processes, dask_client):
    import traceback

    one = sorted(dask_client.scheduler_info(n_workers=-1)["workers"])[0]
    pinned = fd.op(fails_with_source.__wrapped__, workers=[one])
    expected = pinned(21)
    res = fd.run(expected, executor=dask_executor)
    text = "".join(traceback.format_exception(res.error(expected)))
    assert 'raise ValueError(f"failed on {doubled}")' in text and "<dynamic-code>" not in text
    # A failure nobody follows (a future of submit) is logged as dask does, and after it
    # the worker has logged whatever the run's failure would have made it log.
    control = pinned(22)
    future = dask_executor.submit(control)[control]
    with pytest.raises(ValueError, match="failed on 44"):
        future.result(timeout=60)
    def logs():
        return "".join(p.read_text(errors="replace") for p in dask_processes.directory.glob("*.log"))

    wait_until(lambda: control.key in logs(), 30, "the control's log record")
    assert "Compute Failed" in logs()
    assert expected.key not in logs()


def test_closing_after_runs_logs_no_errors(caplog):
    import logging

    with caplog.at_level(logging.WARNING), DaskExecutor(n_workers=1, processes=False) as executor:
        assert fd.compute(inc(1), executor=executor) == (2,)
        assert fd.run(inc(2), executor=executor).ok
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@fd.op
def poison_at_gate(gate, x):
    wait_for_file(gate, 60)
    os._exit(1)  # takes its worker down


class _OpenGateAfter(fd.Callback):
    def __init__(self, node, gate):
        self.node, self.gate = node, gate

    def on_node_finish(self, *, node, duration):
        if node is self.node or node.key == self.node.key:
            open(self.gate, "w").close()


def test_a_killed_worker_in_a_fused_chain_blames_the_op_that_killed_it(tmp_path):
    import dask

    gate = str(tmp_path / "gate")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        executor = DaskExecutor(n_workers=1, threads_per_worker=1)
        executor.connect()
    with executor:
        first = inc(1)
        bad = poison_at_gate(gate, first)
        after = double(bad)
        target = inc(after)
        # As compute runs it: one chain of four steps; the gate opens once the client has
        # heard that the step before the poison finished.
        res = executor.run(fd.Graph(target), fail_fast=True,
                           callbacks=[_OpenGateAfter(first, gate)])
    assert [res.state(n) for n in (first, bad, after, target)] == [
        "done", "failed", "upstream_failed", "upstream_failed"]
    error = res.error(bad)
    assert type(error).__name__ == "KilledWorker"
    assert f"flowdispatch: raised by node {bad.key!r}" in error.__notes__
    assert any(note.startswith("flowdispatch: the worker died while running ops that compute "
                               "folded into one dask task (inc, poison_at_gate, double, inc)")
               for note in error.__notes__)
