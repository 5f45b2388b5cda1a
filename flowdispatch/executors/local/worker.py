"""What runs in a worker process of a process pool: one node, or a batch of quick ones.

The parent ships each call as cloudpickle bytes (``fn, args, kwargs``); the
worker runs it (:func:`~flowdispatch.executors.loop.attempt`), stopping it by a
SIGALRM at its ``timeout``, and sends the outcome back pickled, with the
worker's traceback added as a note to a failure (which then travels without
its traceback objects, so that the traceback is printed once, as the worker
formatted it, with the op's source lines). A result or exception that
cannot be pickled becomes a :class:`~flowdispatch.SerializationError` that
says so.

A worker process also watches its parent (:func:`watch_parent`, the pool's
initializer): when the driver dies, even by SIGKILL, its workers exit too,
rather than wait for calls that never come.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from ...errors import OpTimeoutError, SerializationError, stand_in
from ..calls import note_traceback
from ..loop import attempt

__all__ = ["PARENT_POLL", "attempt_batch", "attempt_pickled", "watch_parent"]

#: Seconds between a worker process's looks at whether its driver is alive.
PARENT_POLL = 0.2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process took the id: ours is gone
        return False
    return True


def watch_parent(driver: int) -> None:
    """In a worker process (the pool's initializer): end the process once the driver
    (process id ``driver``) dies, seen every :data:`PARENT_POLL` seconds.

    The driver is the worker's parent, or (``forkserver``) the parent is the fork
    server, which exits with the driver: either way the parent changes when the
    driver dies. A worker left behind would block for ever on the pool's queue,
    whose pipe it holds open itself.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and _alive(driver):
            time.sleep(PARENT_POLL)  # a poll: nothing signals a parent's death portably
        os._exit(1)

    threading.Thread(target=watch, name="flowdispatch-watch-parent", daemon=True).start()


def _alarm(signum: int, frame: Any) -> None:
    raise OpTimeoutError("the op ran longer than its timeout; it was stopped")


def attempt_pickled(payload: bytes, timeout: float | None = None) -> bytes:
    """In a worker process: run one node shipped as cloudpickle bytes.

    With a ``timeout``, a SIGALRM stops the op (in Python code) at its deadline.
    """
    import cloudpickle

    fn, args, kwargs = cloudpickle.loads(payload)
    if timeout is not None:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        ok, result, seconds = attempt(fn, args, kwargs)
    finally:
        if timeout is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
    if not ok:
        note_traceback(result, "the worker process")
    try:
        data = cloudpickle.dumps((ok, result, seconds))
        if not ok:
            _check_loads(data)  # an exception whose __init__ its args do not fit
        return data
    except Exception as exc:
        if not ok:
            return cloudpickle.dumps((False, stand_in(result, exc), seconds))
        what = "result" if ok else "exception"
        error = SerializationError(
            f"the {what} of type {type(result).__name__} could not be pickled to send it "
            f"back from the worker process: {exc}. Return a picklable value, or use a "
            "thread-based executor."
        )
        return cloudpickle.dumps((False, error, seconds))


def _check_loads(data: bytes) -> None:
    import pickle

    pickle.loads(data)


def attempt_batch(payloads: list[bytes]) -> list[bytes]:
    """In a worker process: run several quick nodes (without timeouts) in turn."""
    return [attempt_pickled(payload) for payload in payloads]
