"""SubmitExecutor: a backend written only against the narrow interface gets the whole
run protocol (cache, callbacks, retries, timeouts, failure propagation)."""

from __future__ import annotations

import concurrent.futures
import inspect
import threading

import pytest

import flowdispatch as fd
from flowdispatch.testing import check_executor


class ThreadPerCallExecutor(fd.SubmitExecutor):
    """Runs each call in a new thread; at most ``slots`` at once."""

    def __init__(self, slots: int = 4):
        super().__init__()
        self.slots = slots
        self.threads: list[threading.Thread] = []
        self.stopped: list[concurrent.futures.Future] = []

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()

        def work():
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        thread = threading.Thread(target=work, daemon=True)
        self.threads.append(thread)
        thread.start()
        return future

    def stop(self, future):
        self.stopped.append(future)
        return super().stop(future)

    def close(self):
        for thread in self.threads:
            thread.join(timeout=10)
        self.threads = []


def test_a_backend_of_under_40_lines_keeps_the_whole_contract():
    lines = inspect.getsource(ThreadPerCallExecutor).strip().splitlines()
    assert len(lines) <= 40
    check_executor(ThreadPerCallExecutor)  # cache and callbacks included


class Refusing(ThreadPerCallExecutor):
    """A backend whose calls of one op fail in the backend itself."""

    def submit(self, fn, /, *args, **kwargs):
        if args[0] is touchy.fn:
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(ConnectionError("the backend lost the call"))
            return future
        return super().submit(fn, *args, **kwargs)


@fd.op
def touchy(x):
    return x


@fd.op
def inc(x):
    return x + 1


def test_a_future_that_raises_fails_only_its_node_with_that_error():
    bad, good = touchy(1), inc(1)
    with Refusing() as executor:
        res = fd.run(inc(bad), good, executor=executor)
    assert res.state(bad) == "failed" and res[good] == 2
    assert res.state(res.targets[0]) == "upstream_failed"
    with pytest.raises(ConnectionError, match="the backend lost the call"):
        res[bad]


def test_a_call_past_its_timeout_is_stopped_or_abandoned_as_the_backend_says():
    release = threading.Event()
    slow = fd.op(lambda: release.wait(10), name="slow", timeout=0.05)
    executor = ThreadPerCallExecutor()
    try:
        res = fd.run(slow(), executor=executor)
    finally:
        release.set()
        executor.close()
    error = res.error(res.targets[0])
    assert isinstance(error, fd.OpTimeoutError)
    assert "abandoned" in str(error)  # a running thread cannot be cancelled
    assert len(executor.stopped) == 1
