"""A thread pool whose threads do not hold the program open: :class:`DaemonThreadPool`.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the
interpreter exits, so an op that a run abandoned (past its ``timeout``, or
running when the run was interrupted) keeps the program alive until it
returns, and a second Ctrl-C breaks into that join with a traceback. The
threads of this pool are daemons: the program exits without them.

Examples
--------
>>> pool = DaemonThreadPool(2, "example")
>>> pool.submit(pow, 2, 10).result(timeout=10)
1024
>>> pool.shutdown()
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DaemonThreadPool"]

_Work = tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(cf.Executor):
    """Up to ``size`` daemon threads named ``<prefix>_<n>``, started as work arrives."""

    def __init__(self, size: int, prefix: str):
        self.size = size
        self.prefix = prefix
        self.running: int = 0  # calls running now
        # (future, fn, args, kwargs) to run, or None: a thread's signal to stop
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self.size:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self.prefix}_{len(self._threads)}")
                thread.start()
                self._threads.append(thread)
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            del item
            if future.set_running_or_notify_cancel():
                with self._lock:
                    self.running += 1
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - the future's to raise
                    future.set_exception(exc)
                finally:
                    with self._lock:
                        self.running -= 1
            del future, fn, args, kwargs
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; with ``wait``, wait for the calls queued (or, with
        ``cancel_futures``, only the running ones) to end."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            for _ in threads:
                self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
