"""flowdispatch.testing.check_executor: passes for our executors, fails for broken ones."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

import flowdispatch as fd
from flowdispatch.testing import CHECKS, check_executor


def test_checks_are_named():
    assert sorted(CHECKS) == [
        "cache", "callbacks", "close", "compute_raises", "containers", "data_nodes", "diamond",
        "expand", "fail_fast", "failure", "fan_out", "kwargs", "nout", "once", "order", "overrides",
        "pure", "rerun", "retries", "retry_on",
    ]


def test_sync_executor_conforms():
    check_executor(fd.SyncExecutor)


def test_thread_executor_conforms():
    check_executor(fd.ThreadExecutor)


def test_thread_executor_with_one_worker_conforms():
    check_executor(lambda: fd.ThreadExecutor(max_workers=1))


def test_process_executor_conforms():
    check_executor(lambda: fd.ProcessExecutor(max_workers=2))


def test_pool_executor_on_a_thread_pool_conforms():
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        check_executor(lambda: fd.PoolExecutor(pool))
        assert pool.submit(int, "7").result(timeout=10) == 7  # ours: not shut down


def test_pool_executor_on_a_process_pool_conforms():
    with cf.ProcessPoolExecutor(max_workers=2) as pool:
        check_executor(lambda: fd.PoolExecutor(pool))


class RunsTwice(fd.SyncExecutor):
    def start(self, node, args, kwargs, report):
        super().start(node, args, kwargs, report)
        return super().start(node, args, kwargs, report)


class SwallowsFailures(fd.SyncExecutor):
    def start(self, node, args, kwargs, report):
        ok, result, seconds = super().start(node, args, kwargs, report)
        return (True, None, seconds) if not ok else (ok, result, seconds)


class IgnoresOverrides(fd.SyncExecutor):
    def run(self, graph, *, overrides=None, fail_fast=False, callbacks=()):
        return super().run(graph, overrides=None, fail_fast=fail_fast, callbacks=callbacks)


class NoCallbacks(fd.SyncExecutor):
    def run(self, graph, *, overrides=None, fail_fast=False, callbacks=()):
        return super().run(graph, overrides=overrides, fail_fast=fail_fast)


class IgnoresFailFast(fd.ThreadExecutor):
    def run(self, graph, *, overrides=None, fail_fast=False, callbacks=()):
        return super().run(graph, overrides=overrides, callbacks=callbacks)


def test_an_executor_that_runs_nodes_twice_fails():
    with pytest.raises(AssertionError) as info:
        check_executor(RunsTwice)
    message = str(info.value)
    assert message.startswith("RunsTwice failed 9 of 20 conformance checks:\n")
    assert "- once: runs after one run: expected {'left': 1, 'right': 1, 'root': 1, 'top': 1}, " \
           "got {'left': 2, 'right': 2, 'root': 2, 'top': 2}" in message
    for check in ("cache", "expand", "fail_fast", "failure", "pure", "rerun", "retries",
                  "retry_on"):
        assert f"\n- {check}: " in message


def test_an_executor_that_swallows_failures_fails():
    with pytest.raises(AssertionError, match=r"SwallowsFailures failed 7 of 19 conformance"):
        check_executor(SwallowsFailures, skip=["fail_fast"])  # fail_fast would wait 5 s


def test_an_executor_that_swallows_failures_names_the_failure_check():
    with pytest.raises(AssertionError, match=r"- failure: states: expected \{'bad': 'failed'"):
        check_executor(SwallowsFailures, skip=["fail_fast"])


def test_a_failure_message_names_compute_raises():
    with pytest.raises(AssertionError, match=r"- compute_raises: compute\(\) of a failing op "
                                             r"did not raise"):
        check_executor(SwallowsFailures, skip=["fail_fast"])


def test_an_executor_that_ignores_overrides_fails_with_the_error_it_raised():
    with pytest.raises(AssertionError) as info:
        check_executor(IgnoresOverrides)
    message = str(info.value)
    assert message.startswith("IgnoresOverrides failed 2 of 20 conformance checks:\n")
    assert "\n- overrides: raised GraphError(\"nodes ['record-" in message
    assert "\n- rerun: raised GraphError(\"nodes ['record-" in message


def test_an_executor_that_drops_callbacks_fails():
    with pytest.raises(AssertionError) as info:
        check_executor(NoCallbacks, skip=["fail_fast"])
    assert str(info.value).splitlines() == [
        "NoCallbacks failed 1 of 19 conformance checks:",
        "- callbacks: first event: expected [('start', 4)], got []",
    ]


def test_an_executor_that_ignores_fail_fast_fails():
    with pytest.raises(AssertionError, match=r"- fail_fast: state of a node after the failure: "
                                             r"expected 'cancelled', got 'done'"):
        check_executor(lambda: IgnoresFailFast(max_workers=2), skip=["callbacks"])


def test_skipping_the_broken_checks_passes():
    check_executor(RunsTwice, skip=["cache", "expand", "fail_fast", "failure", "once", "pure",
                                    "rerun", "retries", "retry_on"])


def test_skip_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"skip: unknown checks \['speed'\]; expected some of "
                                         r"\['cache', 'callbacks', "):
        check_executor(fd.SyncExecutor, skip=["speed"])


def test_every_executor_made_is_closed():
    made = []

    class Counted(fd.SyncExecutor):
        def __init__(self):
            self.closed = 0
            made.append(self)

        def close(self):
            self.closed += 1

    check_executor(Counted)
    assert len(made) == 2  # one for the checks, one for the close check
    assert [executor.closed >= 1 for executor in made] == [True, True]


def test_the_executor_is_closed_when_the_checks_fail():
    made = []

    class Broken(RunsTwice):
        def __init__(self):
            self.closed = False
            made.append(self)

        def close(self):
            self.closed = True

    with pytest.raises(AssertionError):
        check_executor(Broken, skip=["close"])
    assert [executor.closed for executor in made] == [True]


def test_an_executor_whose_run_crashes_reports_every_check():
    class Crashes(fd.Executor):
        def run(self, graph, *, overrides=None, fail_fast=False, callbacks=()):
            raise RuntimeError("not implemented yet")

    with pytest.raises(AssertionError) as info:
        check_executor(Crashes)
    lines = [line for line in str(info.value).splitlines() if line.startswith("- ")]
    assert len(lines) == 20
    assert lines[0] == "- cache: raised RuntimeError('not implemented yet')"
