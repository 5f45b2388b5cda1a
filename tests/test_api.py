"""compute and run: containers, overrides, errors, progress, callbacks and executor=."""

import concurrent.futures as cf
import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest

import flowdispatch as fd
from flowdispatch.executors import registry

ROOT = Path(__file__).resolve().parent.parent


@fd.op
def inc(x):
    return x + 1


@fd.op
def add(x, y):
    return x + y


@fd.op
def where():
    return threading.current_thread().name


class BudgetExceeded(Exception):
    """A user's own exception type."""


@fd.op
def overspend(amount):
    raise BudgetExceeded(f"{amount} is too much")


def _python(code, **env):
    """Run ``code`` in a fresh interpreter that imports flowdispatch from this checkout."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip()


# -- compute ---------------------------------------------------------------------------------

def test_compute_returns_a_tuple_of_values():
    a = inc(1)
    assert fd.compute(a, executor="sync") == (2,)
    assert fd.compute(a, add(a, a), executor="sync") == (2, 4)


def test_compute_traverses_containers():
    a, b = inc(1), inc(2)
    assert fd.compute([a, (b, {"k": a})], {"x": b}, executor="sync") == (
        [2, (3, {"k": 2})], {"x": 3})


def test_compute_passes_other_values_through():
    assert fd.compute(1, [1, inc(1)], executor="sync") == (1, [1, 2])


def test_node_compute():
    a = inc(1)
    assert inc(a).compute(executor="sync") == 3
    assert inc(a).compute(executor="sync", overrides={a: 100}) == 101


def test_compute_with_overrides_by_node_or_key():
    a = inc(1)
    b = add(a, 1)
    assert fd.compute(b, executor="sync", overrides={a: 10}) == (11,)
    assert fd.compute(b, executor="sync", overrides={a.key: 20}) == (21,)
    assert fd.compute(b, a, executor="sync", overrides={a: 30}) == (31, 30)


def test_overrides_must_be_a_mapping_of_nodes():
    a = inc(1)
    with pytest.raises(TypeError, match=r"overrides: expected a dict \{node: value\}, got list"):
        fd.compute(a, executor="sync", overrides=[(a, 1)])
    with pytest.raises(TypeError, match=r"overrides: expected nodes \(or node keys\) as keys, "
                                        r"got int 1"):
        fd.compute(a, executor="sync", overrides={1: 2})


def test_an_override_for_a_node_outside_the_graph_is_refused():
    stray = inc(5)
    with pytest.raises(fd.GraphError, match=rf"overrides: node {stray.key!r} is not one of "
                                            r"the targets or their ancestors \(1 nodes\)"):
        fd.compute(inc(1), executor="sync", overrides={stray: 0})
    with pytest.raises(fd.GraphError, match="overrides: node 'inc-typo' is not one of"):
        fd.run(inc(1), executor="sync", overrides={"inc-typo": 0})


@pytest.mark.parametrize("call", [fd.run, fd.compute])
def test_an_op_that_was_not_called_is_refused(call):
    what = call.__name__
    with pytest.raises(TypeError, match=rf"^{what}: 'inc' is an op: call it to make a node, "
                                        rf"e.g. fd.{what}\(inc\(...\)\)"):
        call(inc, executor="sync")
    with pytest.raises(TypeError, match=rf"^{what}: 'add' is an op"):
        call([inc(1), add], executor="sync")


def test_run_without_targets_is_refused():
    with pytest.raises(TypeError, match=r"^run: expected nodes to run, got none: "
                                        r"fd.run\(node, ...\)"):
        fd.run()
    assert fd.compute() == ()


def test_targets_may_be_iterators():
    a, b = inc(1), inc(2)
    assert fd.compute(iter([a, b]), executor="sync") == ([2, 3],)
    assert fd.compute((n for n in [a]), b, executor="sync") == ([2], 3)
    assert fd.run(iter([a]), executor="sync")[a] == 2


def test_an_override_cut_away_by_another_override_is_fine():
    a = inc(1)
    b = inc(a)
    res = fd.run(inc(b), executor="sync", overrides={a: 10, b: 20})
    assert res[b] == 20 and a not in res


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_compute_raises_the_users_own_exception(executor):
    bad = overspend(100)
    with pytest.raises(BudgetExceeded, match="100 is too much") as info:
        fd.compute(inc(bad), executor=executor)
    assert type(info.value) is BudgetExceeded
    assert f"flowdispatch: raised by node {bad.key!r}" in info.value.__notes__
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "overspend"


def test_compute_raises_through_a_process_executor_with_the_type_kept():
    bad = overspend(5)
    with fd.ProcessExecutor(max_workers=1) as executor:
        with pytest.raises(BudgetExceeded, match="5 is too much") as info:
            fd.compute(bad, executor=executor)
    assert "in overspend" in "\n".join(info.value.__notes__)


def test_compute_raises_the_first_failure_and_starts_nothing_more():
    calls = []
    bad = overspend.options(priority=5)(1)
    other = fd.op(lambda: calls.append("other"), name="other")()
    with pytest.raises(BudgetExceeded):
        fd.compute(bad, other, executor="sync")
    assert calls == []
    assert fd.run(bad, other, executor="sync").counts == {"failed": 1, "done": 1}
    assert calls == ["other"]


# -- run -------------------------------------------------------------------------------------

@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_run_never_raises_for_an_op_failure(executor):
    bad = overspend(3)
    ok = inc(1)
    res = fd.run(inc(bad), ok, executor=executor)
    assert res.counts == {"failed": 1, "upstream_failed": 1, "done": 1}
    assert res[ok] == 2
    assert isinstance(res.error(bad), BudgetExceeded)


def test_run_then_rerun():
    attempts = []

    def sometimes(x):
        attempts.append(x)
        if len(attempts) == 1:
            raise ConnectionError("first time")
        return x

    node = inc(fd.op(sometimes, name="sometimes")(1))
    res = fd.run(node, executor="sync")
    assert res.state(node) == "upstream_failed"
    assert res.rerun(executor="sync")[node] == 2
    assert attempts == [1, 1]


def test_progress_bar(capsys):
    nodes = [inc(i) for i in range(3)]
    assert fd.compute(nodes, executor="sync", progress=True) == ([1, 2, 3],)
    err = capsys.readouterr().err
    assert "3/3" in err
    assert "node" in err


def test_progress_must_be_a_known_value():
    with pytest.raises(ValueError, match=r"progress: expected False, True \(a progress bar\) or "
                                         r"'graph'"):
        fd.compute(inc(1), executor="sync", progress="yes")


def test_callbacks():
    class Names(fd.Callback):
        def __init__(self):
            self.started, self.finished = [], []

        def on_node_start(self, *, node, attempt):
            self.started.append((node.name, attempt))

        def on_finish(self, *, results):
            self.finished.append(results.counts)

    names = Names()
    fd.compute(inc(inc(1)), executor="sync", callbacks=[names])
    assert names.started == [("inc", 1), ("inc", 1)]
    assert names.finished == [{"done": 2}]


# -- executor= -------------------------------------------------------------------------------

def test_the_default_executor_is_threads():
    assert fd.config.get("executor") == "threads"
    assert where().compute().startswith("flowdispatch")


def test_config_set_changes_the_default_executor():
    with fd.config.set(executor="sync"):
        assert where().compute() == threading.current_thread().name
    assert where().compute().startswith("flowdispatch")


def test_the_default_executor_from_the_environment():
    out = _python("import flowdispatch as fd, threading\n"
                  "print(fd.config.get('executor'))\n"
                  "print(fd.op(lambda: threading.current_thread().name)().compute())",
                  DASK_FLOWDISPATCH__EXECUTOR="sync")
    assert out.splitlines() == ["sync", "MainThread"]


def test_an_unknown_executor_name_lists_the_known_ones():
    with pytest.raises(fd.UnknownExecutorError) as info:
        fd.compute(inc(1), executor="warp-drive")
    assert isinstance(info.value, LookupError)
    assert str(info.value) == (
        "unknown executor 'warp-drive'; expected one of ['dask', 'processes', 'sync', "
        "'threads'], a scheduler address such as 'tcp://127.0.0.1:8786', an fd.Executor, a "
        "distributed.Client or a concurrent.futures.Executor")


def test_an_unknown_default_executor_is_reported_too():
    with fd.config.set(executor="nowhere"):
        with pytest.raises(fd.UnknownExecutorError, match=r"unknown executor 'nowhere'"):
            inc(1).compute()


def test_an_executor_of_the_wrong_kind():
    with pytest.raises(fd.UnknownExecutorError) as info:
        fd.compute(inc(1), executor=42)
    assert str(info.value) == (
        "executor=: expected a name (['dask', 'processes', 'sync', 'threads']), a scheduler "
        "address, an fd.Executor, a distributed.Client or a concurrent.futures.Executor; got "
        "int")


def test_register_executor(monkeypatch):
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    made = []

    def factory():
        made.append(fd.SyncExecutor())
        return made[-1]

    fd.register_executor("here", factory)
    assert where().compute(executor="here") == threading.current_thread().name
    assert len(made) == 1
    with pytest.raises(fd.UnknownExecutorError, match=r"expected one of \['dask', 'here', "):
        inc(1).compute(executor="there")


def test_register_executor_checks_its_arguments(monkeypatch):
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    with pytest.raises(ValueError, match=r"executor name: expected a non-empty name without "
                                         r"'://', got 'tcp://x'"):
        fd.register_executor("tcp://x", fd.SyncExecutor)
    with pytest.raises(ValueError, match=r"got ''"):
        fd.register_executor("", fd.SyncExecutor)
    with pytest.raises(TypeError, match=r"executor factory: expected a callable or a dotted "
                                        r"path 'package.module:name', got str 'sync'"):
        fd.register_executor("x", "sync")
    fd.register_executor("not-an-executor", lambda: "nope")
    with pytest.raises(fd.UnknownExecutorError, match=r"executor factory for 'not-an-executor' "
                                                      r"returned str, expected an fd.Executor"):
        inc(1).compute(executor="not-an-executor")


def test_register_executor_takes_a_dotted_path_imported_when_first_asked_for(monkeypatch):
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    fd.register_executor("by-path", "flowdispatch.executors.local:SyncExecutor")
    assert registry._factories["by-path"] == "flowdispatch.executors.local:SyncExecutor"
    assert fd.compute(inc(1), executor="by-path") == (2,)


def test_an_owned_executor_is_closed_and_a_given_one_is_not(monkeypatch):
    monkeypatch.setattr(registry, "_factories", dict(registry._factories))
    closed = []

    class Tracked(fd.SyncExecutor):
        def close(self):
            closed.append(self)

    fd.register_executor("tracked", Tracked)
    inc(1).compute(executor="tracked")
    assert len(closed) == 1
    given = Tracked()
    inc(1).compute(executor=given)
    assert closed == [closed[0]]


def test_executor_can_be_a_concurrent_futures_pool():
    with cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="mine") as pool:
        assert where().compute(executor=pool).startswith("mine")
        assert pool.submit(int, "3").result(timeout=10) == 3  # not shut down


def test_executor_can_be_an_executor_instance():
    with fd.ThreadExecutor(max_workers=1) as executor:
        assert fd.compute(inc(1), where(), executor=executor) == (2, "flowdispatch_0")


# -- imports ---------------------------------------------------------------------------------

def test_import_does_not_import_distributed():
    out = _python("import sys, flowdispatch as fd\n"
                  "print('distributed' in sys.modules)\n"
                  "fd.compute(fd.op(sum)([1, 2]))\n"
                  "fd.compute(fd.op(sum)([1, 2]), executor='sync')\n"
                  "print('distributed' in sys.modules)")
    assert out.splitlines() == ["False", "False"]


def test_a_third_party_executor_from_the_entry_point_group(tmp_path):
    dist = tmp_path / "thirdparty_executor-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-executor\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[flowdispatch.executors]\nin-line = flowdispatch:SyncExecutor\n")
    out = _python(
        "import sys, flowdispatch as fd\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "print(fd.op(sum)([1, 2]).compute(executor='in-line'))\n"
        "try:\n    fd.compute(fd.op(sum)([1]), executor='nope')\n"
        "except fd.UnknownExecutorError as e:\n    print(e)\n")
    value, message = out.splitlines()
    assert value == "3"
    assert "expected one of ['dask', 'in-line', 'processes', 'sync', 'threads']" in message


def test_compute_says_so_when_a_target_was_cancelled_without_an_error():
    class Quitter(fd.Executor):
        """Gives up on everything, and says nothing."""

        def run(self, graph, *, overrides=None, fail_fast=False, callbacks=()):
            return fd.Results(graph, {n.key: "cancelled" for n in graph})

    node = fd.op(lambda x: x + 1, name="inc")(1)
    with pytest.raises(fd.CancelledError, match=r"nodes \['inc-.*'\] were cancelled before"):
        fd.compute(node, executor=Quitter())
