"""The retry policy: which errors are retried, how often, and after how long."""

import time

import pytest

import flowdispatch as fd
from flowdispatch.core.op import OpSettings
from flowdispatch.core.retry import matches, retry_delay


def test_matches_exception_types_and_tuples():
    assert matches(Exception, ValueError())
    assert matches(OSError, ConnectionError())
    assert not matches(OSError, ValueError())
    assert matches((KeyError, OSError), TimeoutError())
    assert not matches((KeyError, OSError), ValueError())
    assert not matches(Exception, KeyboardInterrupt())


def test_matches_a_predicate():
    assert matches(lambda e: "again" in str(e), RuntimeError("try again"))
    assert not matches(lambda e: "again" in str(e), RuntimeError("give up"))
    assert matches(lambda e: 1, ValueError())


def test_a_broken_predicate_does_not_retry_and_says_why():
    error = ValueError("the op's own error")
    assert not matches(lambda e: 1 / 0, error)
    assert error.__notes__ == [
        "flowdispatch: retry_on predicate raised ZeroDivisionError('division by zero'); "
        "not retried"]


def test_no_settings_no_retries():
    assert retry_delay(None, ValueError(), 1) is None
    assert retry_delay(OpSettings(), ValueError(), 1) is None


def test_retries_count_attempts():
    settings = OpSettings(retries=2)
    assert [retry_delay(settings, ValueError(), n) for n in (1, 2, 3)] == [0.0, 0.0, None]


def test_delay_backoff_and_cap():
    settings = OpSettings(retries=5, retry_delay=0.5, backoff=3.0, max_delay=4.0)
    assert [retry_delay(settings, OSError(), n) for n in range(1, 7)] == [
        0.5, 1.5, 4.0, 4.0, 4.0, None]


def test_constant_delay_by_default():
    settings = OpSettings(retries=3, retry_delay=0.25)
    assert [retry_delay(settings, OSError(), n) for n in (1, 2, 3)] == [0.25, 0.25, 0.25]


def test_an_error_that_does_not_match_is_not_retried():
    settings = OpSettings(retries=3, retry_on=(OSError,))
    assert retry_delay(settings, ValueError(), 1) is None
    assert retry_delay(settings, FileNotFoundError(), 1) == 0.0


def _flaky(failures, stamps, error=ConnectionError):
    def fn():
        stamps.append(time.monotonic())
        if len(stamps) <= failures:
            raise error(f"attempt {len(stamps)}")
        return len(stamps)
    return fn


@pytest.mark.parametrize("executor", ["sync", "threads"])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_k_failures_with_k_retries_succeed_on_attempt_k_plus_1(executor, k):
    stamps = []
    node = fd.op(_flaky(k, stamps), retries=k, name="flaky")()
    res = fd.run(node, executor=executor)
    assert (res.state(node), res[node], res.attempts(node), len(stamps)) == (
        "done", k + 1, k + 1, k + 1)


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_one_failure_too_many_raises_the_last_error(executor):
    stamps = []
    flaky = fd.op(_flaky(3, stamps), retries=2, name="flaky")()
    after = fd.op(lambda x: x, name="after")(flaky)
    res = fd.run(after, executor=executor)
    assert (res.state(flaky), res.state(after), res.attempts(after)) == (
        "failed", "upstream_failed", 0)
    assert len(stamps) == 3
    with pytest.raises(ConnectionError, match="attempt 3"):
        res[flaky]
    assert str(res.error(flaky)) == "attempt 3"


def test_retry_on_a_type_that_does_not_match_runs_once():
    stamps = []
    node = fd.op(_flaky(1, stamps, ValueError), retries=3, retry_on=(OSError,), name="f")()
    res = fd.run(node, executor="sync")
    assert (res.state(node), len(stamps)) == ("failed", 1)
    assert type(res.error(node)) is ValueError


def test_retry_delay_waits_between_attempts():
    stamps = []
    node = fd.op(_flaky(2, stamps), retries=2, retry_delay=0.05, backoff=2.0, name="f")()
    assert node.compute(executor="sync") == 3
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1


def test_retry_delay_does_not_hold_up_other_nodes():
    stamps = []
    slow_retry = fd.op(_flaky(1, stamps), retries=1, retry_delay=0.5, priority=1,
                       name="slow_retry")()
    finished = []
    quick = fd.op(lambda: finished.append(time.monotonic()), name="quick")()
    fd.run(slow_retry, quick, executor="sync")
    assert len(stamps) == 2
    assert finished[0] < stamps[1]  # ran while the other waited for its retry
