"""Local executors: sync, threads, processes and a given pool; interrupts and worker deaths."""

from __future__ import annotations

import _thread
import contextlib
import concurrent.futures as cf
import os
import sys
import threading
import time

import psutil
import pytest

import flowdispatch as fd
from flowdispatch.testing import append_line as _log, read_lines as _lines

# -- ops -------------------------------------------------------------------------------------

STARTED: list[str] = []
RELEASE = threading.Event()




@fd.op
def inc(x):
    return x + 1


def _interrupt_main_in_the_loop(timeout=10.0):
    """Interrupt the main thread once it is back in the scheduling loop (bounded wait).

    Ctrl-C can come at any moment; this one comes while the loop waits for
    running nodes, which is where a run spends its time.
    """
    main = threading.main_thread().ident
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_code.co_qualname == "Loop.wait":
            break
        time.sleep(0.001)
    _thread.interrupt_main()


@fd.op(priority=10)
def interrupter():
    """Interrupt the main thread, then keep running until released."""
    STARTED.append("interrupter")
    _interrupt_main_in_the_loop()
    RELEASE.wait(timeout=10)
    return 1


@fd.op
def mark(label, *deps):
    STARTED.append(label)
    return label


@fd.op(priority=10)
def blocker(log):
    """In a worker process: log the pid, then wait (bounded) for a release file."""
    _log(log, f"blocker {os.getpid()}")
    deadline = time.monotonic() + 20
    while not os.path.exists(log + ".release") and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


@fd.op
def logged(log, label, *deps):
    _log(log, label)
    return label


@fd.op
def die(x):
    os._exit(1)


@fd.op(retries=1)
def die_once(marker):
    if not os.path.exists(marker):
        _log(marker, "died")
        os._exit(1)
    return "survived"


@fd.op(retries=3)
def stop(calls):
    calls.append("stop")
    raise KeyboardInterrupt("stop here")


@fd.op
def identity(x, **kwargs):
    return x


@fd.op
def make_lock():
    return threading.Lock()


@fd.op
def both_at_once(barrier):
    barrier.wait()
    return threading.current_thread().name


def _flowdispatch_threads():
    return {t for t in threading.enumerate() if t.name.startswith("flowdispatch")}


def _join_new_threads(before, timeout=10.0):
    """Join the flowdispatch threads started since ``before``; return those still alive."""
    deadline = time.monotonic() + timeout
    for thread in _flowdispatch_threads() - before:
        thread.join(max(0.0, deadline - time.monotonic()))
    return _flowdispatch_threads() - before


# -- construction ----------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [fd.ThreadExecutor, fd.ProcessExecutor])
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_max_workers_must_be_a_whole_number_of_at_least_one(cls, bad):
    with pytest.raises(ValueError, match=rf"max_workers: expected a whole number >= 1, "
                                         rf"got {bad!r}"):
        cls(max_workers=bad)


def test_reprs():
    assert repr(fd.SyncExecutor()) == "SyncExecutor()"
    assert repr(fd.ThreadExecutor(max_workers=3)) == "ThreadExecutor(max_workers=3)"
    assert repr(fd.ProcessExecutor()) == "ProcessExecutor(max_workers=None)"


def test_pool_executor_needs_a_concurrent_futures_executor():
    with pytest.raises(TypeError, match=r"expected a concurrent.futures.Executor, got list"):
        fd.PoolExecutor([])


def test_executors_are_executors():
    with cf.ThreadPoolExecutor(1) as pool:
        made = [fd.SyncExecutor(), fd.ThreadExecutor(), fd.ProcessExecutor(), fd.PoolExecutor(pool)]
        assert all(isinstance(executor, fd.Executor) for executor in made)


def test_executor_has_one_abstract_method():
    assert fd.Executor.__abstractmethods__ == frozenset({"run"})
    with pytest.raises(TypeError, match=r"abstract method"):
        fd.Executor()


# -- where nodes run -------------------------------------------------------------------------

def test_sync_executor_runs_in_the_calling_thread():
    where = fd.op(lambda: threading.current_thread().name, name="where")()
    assert where.compute(executor=fd.SyncExecutor()) == threading.current_thread().name


def test_thread_executor_runs_nodes_concurrently():
    barrier = threading.Barrier(2, timeout=10)
    with fd.ThreadExecutor(max_workers=2) as executor:
        names = fd.compute([both_at_once(barrier), both_at_once(barrier)], executor=executor)[0]
    assert sorted(names) == ["flowdispatch_0", "flowdispatch_1"]


def test_thread_executor_with_one_worker_runs_one_node_at_a_time():
    barrier = threading.Barrier(2, timeout=0.3)
    with fd.ThreadExecutor(max_workers=1) as executor:
        res = fd.run(both_at_once(barrier), both_at_once(barrier), executor=executor)
    assert res.counts == {"failed": 2}
    assert {type(error).__name__ for error in map(res.error, res.failed)} == {
        "BrokenBarrierError"}


def test_thread_executor_closes_its_threads_and_can_run_again():
    before = _flowdispatch_threads()
    executor = fd.ThreadExecutor(max_workers=2)
    assert inc(1).compute(executor=executor) == 2
    assert len(_flowdispatch_threads() - before) >= 1
    executor.close()
    assert _flowdispatch_threads() - before == set()
    executor.close()
    assert inc(2).compute(executor=executor) == 3
    executor.close()
    assert _flowdispatch_threads() - before == set()


def test_process_executor_runs_in_other_processes():
    with fd.ProcessExecutor(max_workers=2) as executor:
        pid = fd.op(os.getpid)().compute(executor=executor)
    assert pid != os.getpid()


def test_process_executor_runs_lambdas_and_local_functions():
    factor = 3
    scale = fd.op(lambda x: x * factor, name="scale")
    with fd.ProcessExecutor(max_workers=1) as executor:
        assert fd.compute(scale(inc(1)), executor=executor) == (6,)


def test_pool_executor_never_shuts_down_the_given_pool():
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        executor = fd.PoolExecutor(pool)
        assert inc(1).compute(executor=executor) == 2
        executor.close()
        assert inc(1).compute(executor=pool) == 2
        assert pool.submit(int, "5").result(timeout=10) == 5


def test_pool_executor_on_a_process_pool_ships_nodes_with_cloudpickle():
    offset = 10
    with cf.ProcessPoolExecutor(max_workers=1) as pool:
        node = fd.op(lambda x: x + offset, name="shift")(inc(1))
        assert fd.compute(node, executor=pool) == (12,)


# -- interrupts ------------------------------------------------------------------------------

@pytest.mark.parametrize("owned", [True, False], ids=["by-name", "instance"])
def test_keyboard_interrupt_on_threads_cancels_what_has_not_started(owned, monkeypatch):
    from flowdispatch.executors import registry

    monkeypatch.setitem(registry._factories, "one-thread", lambda: fd.ThreadExecutor(1))
    before = _flowdispatch_threads()
    STARTED.clear()
    RELEASE.clear()
    first = interrupter()
    targets = [mark("after", first), mark("other-1"), mark("other-2")]
    executor = fd.ThreadExecutor(max_workers=1)
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            fd.compute(targets, executor="one-thread" if owned else executor)
        assert time.monotonic() - began < 5  # not held up by the running op (10 s)
    finally:
        RELEASE.set()
    assert _join_new_threads(before) == set()
    assert STARTED == ["interrupter"]
    assert inc(1).compute(executor=executor) == 2  # the executor still works
    executor.close()
    assert _flowdispatch_threads() - before == set()


def test_keyboard_interrupt_on_processes_stops_the_worker_processes(tmp_path):
    log = str(tmp_path / "log")
    targets = [blocker(log), logged(log, "other-1"), logged(log, "other-2")]

    def interrupt_when_running():
        deadline = time.monotonic() + 20
        while not _lines(log) and time.monotonic() < deadline:
            time.sleep(0.01)
        _interrupt_main_in_the_loop()

    executor = fd.ProcessExecutor(max_workers=1)
    helper = threading.Thread(target=interrupt_when_running)
    helper.start()
    began = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            fd.compute(targets, executor=executor)
        assert time.monotonic() - began < 10  # not held up by the running op (20 s)
    finally:
        helper.join(30)
        _log(log + ".release", "go")
    [line] = _lines(log)
    assert line.startswith("blocker ")
    worker = int(line.split()[1])
    gone, alive = psutil.wait_procs([psutil.Process(worker)] if psutil.pid_exists(worker)
                                    else [], timeout=10)
    assert alive == []
    assert _lines(log) == [line]  # nothing else started
    assert fd.compute(inc(1), executor=executor) == (2,)  # a new pool on the next run
    executor.close()


@pytest.mark.parametrize("make", [fd.SyncExecutor, fd.ThreadExecutor],
                         ids=["sync", "threads"])
def test_keyboard_interrupt_inside_an_op_propagates_and_is_not_retried(make):
    calls = []
    with make() as executor:
        with pytest.raises(KeyboardInterrupt, match="stop here"):
            fd.run(stop(calls), executor=executor)
    assert calls == ["stop"]


# -- worker deaths and pickling --------------------------------------------------------------

def test_a_dying_worker_fails_its_node_and_the_executor_goes_on():
    with fd.ProcessExecutor(max_workers=2) as executor:
        dead = die(1)
        after = inc(dead)
        res = fd.run(after, executor=executor)
        assert (res.state(dead), res.state(after)) == ("failed", "upstream_failed")
        error = res.error(dead)
        assert isinstance(error, cf.process.BrokenProcessPool)
        assert "terminated abruptly" in str(error)
        assert f"flowdispatch: raised by node {dead.key!r}" in error.__notes__
        assert fd.compute(inc(41), executor=executor) == (42,)
        assert fd.compute([inc(i) for i in range(4)], executor=executor) == ([1, 2, 3, 4],)


def test_a_worker_death_is_retried_on_a_new_pool(tmp_path):
    marker = str(tmp_path / "died")
    with fd.ProcessExecutor(max_workers=1) as executor:
        node = die_once(marker)
        res = fd.run(node, executor=executor)
        assert (res.state(node), res[node], res.attempts(node)) == ("done", "survived", 2)
    assert _lines(marker) == ["died"]


def test_an_unpicklable_argument_fails_its_node_with_a_serialization_error():
    with fd.ProcessExecutor(max_workers=1) as executor:
        node = identity(threading.Lock())
        by_name = identity(1, lock=threading.Lock())
        fine = inc(1)
        res = fd.run(node, by_name, fine, executor=executor)
    assert res.counts == {"failed": 2, "done": 1}
    with pytest.raises(fd.SerializationError,
                       match=rf"node '{node.key}': argument 0 \(a lock\) cannot be pickled to "
                             r"send it to another process: cannot pickle '_thread.lock' object\. "
                             r"Pass something picklable, create it inside the op, or use a "
                             r"thread-based executor\."):
        res[node]
    with pytest.raises(fd.SerializationError, match=r"argument 'lock' \(a lock\) cannot be "
                                                    r"pickled"):
        res[by_name]
    assert isinstance(res.error(node).__cause__, TypeError)
    assert isinstance(res.error(node), TypeError)


def test_threads_run_what_processes_cannot_pickle():
    lock = threading.Lock()
    with fd.ThreadExecutor() as executor:
        assert identity(lock).compute(executor=executor) is lock


def test_an_unpicklable_result_fails_its_node_with_a_serialization_error():
    with fd.ProcessExecutor(max_workers=1) as executor:
        node = make_lock()
        res = fd.run(node, executor=executor)
    with pytest.raises(fd.SerializationError,
                       match=r"the result of type lock could not be pickled to send it back "
                             r"from the worker process"):
        res[node]


def test_an_error_from_a_worker_process_keeps_its_type_and_the_worker_traceback():
    @fd.op
    def explode(x):
        raise LookupError(f"nothing at {x}")

    node = explode(3)
    with fd.ProcessExecutor(max_workers=1) as executor:
        with pytest.raises(LookupError, match="nothing at 3") as info:
            node.compute(executor=executor)
    notes = "\n".join(info.value.__notes__)
    assert "Traceback in the worker process:" in notes
    assert "in explode" in notes
    assert f"flowdispatch: raised by node {node.key!r}" in notes


@fd.op(timeout=0.2)
def stuck(event_path):
    # Waits (bounded) for a file that never comes: only the timeout ends it early.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not os.path.exists(event_path):
        time.sleep(0.01)
    return "finished"


@pytest.mark.parametrize("make", [lambda: fd.ThreadExecutor(2), lambda: fd.ProcessExecutor(2)],
                         ids=["threads", "processes"])
def test_an_op_past_its_timeout_fails_and_the_run_goes_on(make, tmp_path):
    never = str(tmp_path / "never")
    slow, fine = stuck(never), inc(1)
    started = time.monotonic()
    with make() as executor:
        res = fd.run(slow, inc(slow), fine, executor=executor)
    assert time.monotonic() - started < 15  # did not wait the op's 20 s out
    assert (res.state(slow), res.state(fine), res[fine]) == ("failed", "done", 2)
    assert isinstance(res.error(slow), fd.OpTimeoutError)
    assert isinstance(res.error(slow), TimeoutError)
    with pytest.raises(fd.OpTimeoutError, match=r"longer than its timeout of 0\.2 s"):
        res[slow]
    assert res.error(inc(slow).dependencies[0]) is res.error(slow)
    open(never, "w").close()  # let an abandoned thread end now




def test_a_timeout_on_the_sync_executor_fails_the_node_when_it_returns():
    slow = fd.op(lambda: time.sleep(0.3) or "late", timeout=0.1, name="late")()
    res = fd.run(slow, executor="sync")
    assert res.state(slow) == "failed"
    with pytest.raises(fd.OpTimeoutError, match=r"ran 0\.\d+ s, longer than its timeout of 0\.1 s"):
        res[slow]


def test_a_timed_out_attempt_is_retried(tmp_path):
    marker = str(tmp_path / "go")
    with fd.ThreadExecutor(2) as executor:
        node = stuck.options(retries=1)(marker)
        res = fd.run(node, executor=executor)
        assert (res.state(node), res.attempts(node)) == ("failed", 2)
        open(marker, "w").close()  # let the abandoned threads end now


# -- batches of quick nodes on process pools ---------------------------------------------------


class Batches(fd.ProcessExecutor):
    """Records the size of every batch it is given."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches = []

    def start_many(self, calls):
        self.batches.append(len(calls))
        return super().start_many(calls)


@fd.op
def odd_fails(x):
    if x % 7 == 6:
        raise ValueError(f"{x} is unlucky")
    return x


@fd.op(timeout=30)
def timed_inc(x):
    return x + 1


@fd.op
def slow_inc(x):
    time.sleep(0.005)  # the op's own work: longer than quick
    return x + 1


@fd.op
def dies_at(x, at):
    if x == at:
        os._exit(1)
    return x


def test_quick_nodes_go_to_worker_processes_in_batches():
    from flowdispatch.executors.loop import BATCH

    with Batches(max_workers=2) as executor:
        leaves = [odd_fails(i) for i in range(60)]
        res = fd.run(*leaves, executor=executor)
    assert executor.batches and max(executor.batches) <= BATCH
    assert sum(executor.batches) >= 40  # after the first runs showed the op quick
    assert [res.state(n) for n in leaves] == ["failed" if i % 7 == 6 else "done" for i in range(60)]
    assert [res[n] for n in leaves if res.state(n) == "done"] == [i for i in range(60) if i % 7 != 6]
    assert str(res.error(leaves[6])) == "6 is unlucky"
    assert all(res.attempts(n) == 1 and res.duration(n) is not None for n in leaves)


def test_nodes_with_a_timeout_and_slow_nodes_go_alone():
    with Batches(max_workers=2) as executor:
        assert fd.compute([timed_inc(i) for i in range(20)], executor=executor) == (
            list(range(1, 21)),)
        assert fd.compute([slow_inc(i) for i in range(12)], executor=executor) == (
            list(range(1, 13)),)
    assert executor.batches == []


def test_an_unpicklable_argument_fails_only_its_node_in_a_batch():
    with Batches(max_workers=1) as executor:  # the first node runs alone, then batches
        nodes = [identity(i) for i in range(5)] + [identity(threading.Lock())]
        nodes += [identity(i) for i in range(5)]
        res = fd.run(*nodes, executor=executor)
    assert executor.batches
    assert [res.state(n) for n in nodes] == ["done"] * 5 + ["failed"] + ["done"] * 5
    assert isinstance(res.error(nodes[5]), fd.SerializationError)


def test_a_worker_dying_in_a_batch_fails_that_batch_and_the_executor_goes_on():
    with Batches(max_workers=1) as executor:  # the first node runs alone, then batches
        nodes = [dies_at(i, at=3) for i in range(6)]
        res = fd.run(*nodes, executor=executor)
        assert executor.batches
        assert res.state(nodes[3]) == "failed"
        broken = [n for n in nodes if res.state(n) == "failed"]
        for node in broken:  # its batch-mates' errors are their own, each naming its node
            error = res.error(node)
            assert isinstance(error, cf.process.BrokenProcessPool)
            assert [n for n in error.__notes__ if "raised by node" in n] == [
                f"flowdispatch: raised by node {node.key!r}"]
        assert fd.compute([inc(i) for i in range(8)], executor=executor) == (
            [1, 2, 3, 4, 5, 6, 7, 8],)


def test_a_process_pool_you_own_takes_quick_nodes_in_batches_too():
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    with cf.ProcessPoolExecutor(2, mp_context=context) as pool:
        submitted, submit = [], pool.submit
        pool.submit = lambda fn, *args: submitted.append(fn.__name__) or submit(fn, *args)
        executor = fd.PoolExecutor(pool)
        assert fd.compute([inc(i) for i in range(30)], executor=executor) == (
            list(range(1, 31)),)
    assert "attempt_batch" in submitted and len(submitted) < 30
    with cf.ThreadPoolExecutor(2) as pool:
        assert not hasattr(fd.PoolExecutor(pool), "start_many")  # no round trips to save


def test_a_batch_the_pool_refuses_fails_each_of_its_nodes():
    from flowdispatch.executors.local.pools import _start_many

    def refuse(*args):
        raise RuntimeError("cannot schedule new futures after shutdown")

    nodes = [inc(i) for i in range(3)]
    errors = _start_many(refuse, [(n, (i,), {}, None) for i, n in enumerate(nodes)])
    assert all(isinstance(e, RuntimeError) and "shutdown" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == 3  # each node notes its own


_BLOCKED_RUN = """
import threading, flowdispatch as fd

@fd.op
def blocks(x):
    print("started", flush=True)
    threading.Event().wait(120)  # a long op: Ctrl-C must not wait for it
    return x

if __name__ == "__main__":
    fd.run([blocks(i) for i in range(2)], executor="threads")
"""


def test_ctrl_c_on_threads_returns_at_once_and_says_the_running_ops_were_abandoned(tmp_path):
    import signal
    import subprocess

    script = tmp_path / "blocked.py"
    script.write_text(_BLOCKED_RUN)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        while seen.count("started") < 2:  # both ops run (bounded by the test's timeout)
            seen += process.stdout.readline()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)  # the ops would run for two minutes
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode != 0
    assert "KeyboardInterrupt" in err
    assert "flowdispatch: 2 running op(s) were abandoned" in err
    assert "threading" not in err.split("KeyboardInterrupt")[-1]  # no exit-time join traceback


@fd.op
def fails_with_source(x):
    doubled = 2 * x
    raise ValueError(f"failed on {doubled}")


def test_a_worker_process_traceback_shows_the_op_source_once():
    import traceback

    node = fails_with_source(1)
    error = fd.run(node, executor="processes").error(node)
    text = "".join(traceback.format_exception(error))
    assert 'raise ValueError(f"failed on {doubled}")' in text  # sent by reference
    assert "<dynamic-code>" not in text
    assert text.count("Traceback (most recent call last)") == 1
    assert text.count("ValueError: failed on 2") == 2  # the error, and the worker's last line


_DRIVER = """
import os, sys, time
import flowdispatch as fd
from flowdispatch.testing import append_line

log, gate = sys.argv[1], sys.argv[2]

def hold(i):
    append_line(log, str(os.getpid()))
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return i

if __name__ == "__main__":
    fd.run(*[fd.op(hold)(i) for i in range(2)], executor=fd.ProcessExecutor(2))
"""


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_pool_workers_exit_when_their_driver_is_killed(tmp_path):
    import subprocess

    from conftest import wait_until

    log, gate = str(tmp_path / "pids"), str(tmp_path / "gate")
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), log, gate])
    tree: list[psutil.Process] = []
    try:
        wait_until(lambda: len(set(_lines(log))) == 2, 60, "both pool workers to start an op")
        tree = psutil.Process(driver.pid).children(recursive=True)
        workers = {int(pid) for pid in _lines(log)}
        assert workers <= {p.pid for p in tree}
        driver.kill()
        driver.wait(10)
        wait_until(lambda: not any(_running(p) for p in tree), 10,
                   "the pool's processes to exit after their driver was killed")
    finally:
        open(gate, "w").close()
        driver.kill()
        driver.wait(10)
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.kill()
