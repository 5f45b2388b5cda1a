"""Local executors: in the calling thread, in a thread pool, in a process pool.

All of them are :class:`~.submit.SubmitExecutor` subclasses: they drive the
one scheduling loop (:mod:`.loop`) and differ only in how a call is started. Pools are created on the first run and kept until
:meth:`close`, so repeated runs do not pay for start-up.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import SerializationError
from ..calls import by_reference, call_parts, unpicklable
from ..loop import Outcome, _timeout, attempt
from ..submit import SubmitExecutor
from .daemon import DaemonThreadPool
from .worker import attempt_batch, attempt_pickled, watch_parent

if TYPE_CHECKING:
    from ...core.node import Node

__all__ = ["PoolExecutor", "ProcessExecutor", "SyncExecutor", "ThreadExecutor"]


class SyncExecutor(SubmitExecutor):
    """Runs every node in the calling thread, in topological order; ``pdb`` works.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> fd.op(sum)([1, 2]).compute(executor=fd.SyncExecutor())
    3
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future

    def start(self, node: Node[Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              report: Callable[[Outcome], None]) -> Outcome | None:
        return attempt(node._fn, args, kwargs)  # type: ignore[arg-type]  # in-line: no future to wait for

    def __repr__(self) -> str:
        return "SyncExecutor()"


class _PoolRunner(SubmitExecutor):
    """Starts nodes on a ``concurrent.futures`` pool."""

    _pool: cf.Executor | None = None

    def _get_pool(self) -> cf.Executor:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        return self._get_pool().submit(fn, *args, **kwargs)

    def _shutdown(self, *, wait: bool, kill: bool = False) -> None:
        """Forget the pool this executor made and shut it down (``kill``: its processes too)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            if kill:
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.terminate()
            pool.shutdown(wait=wait, cancel_futures=True)


class ThreadExecutor(_PoolRunner):
    """Runs nodes on a pool of ``max_workers`` threads (default: as ``ThreadPoolExecutor``).

    A running op cannot be stopped from outside its thread: on interrupt
    (Ctrl-C), the nodes not yet started are cancelled and the running ones
    are abandoned, as past a timeout: the interrupt is raised at once (its
    note says how many ops were left running), and the pool's threads are
    daemons, so the program does not wait for those ops when it exits.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> with fd.ThreadExecutor(max_workers=2) as ex:
    ...     fd.compute(fd.op(max)(1, 5), executor=ex)
    (5,)
    """

    def __init__(self, max_workers: int | None = None):
        super().__init__()
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers: expected a whole number >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self.slots: int = max_workers or min(32, (os.cpu_count() or 1) + 4)

    def _get_pool(self) -> cf.Executor:
        with self._lock:
            if self._pool is None:
                self._pool = DaemonThreadPool(self.slots, "flowdispatch")
            return self._pool

    def cancel(self) -> None:
        # After an interrupt: start nothing more and do not wait for the running
        # ops (a thread cannot be stopped); their threads end as the ops return.
        pool = self._pool
        running = pool.running if isinstance(pool, DaemonThreadPool) else 0
        self._shutdown(wait=False)
        interrupt = sys.exception()  # the loop calls this while handling the interrupt
        if running and interrupt is not None:
            interrupt.add_note(
                f"flowdispatch: {running} running op(s) were abandoned: a thread cannot be "
                "stopped, so they run on in the background until they return; the program "
                "does not wait for them when it exits")

    def close(self) -> None:
        """Shut the pool down; wait for running ops unless some were abandoned."""
        self._shutdown(wait=not self._abandoned)

    def __repr__(self) -> str:
        return f"ThreadExecutor(max_workers={self.max_workers})"


def ship(node: Node[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle one call for another process; name what cannot be pickled."""
    import cloudpickle

    try:
        return cloudpickle.dumps((by_reference(node._fn), args, kwargs))  # type: ignore[arg-type]  # an op's node has its function
    except Exception as exc:
        error = unpicklable(node, [("the op", node._fn), *call_parts(node, args, kwargs)],
                            "another process", exc)
        raise error from error.__cause__


def _unship(future: cf.Future[Any]) -> Outcome:
    """The outcome of a node run by :func:`attempt_pickled` (never raises)."""
    try:
        data = future.result()
    except cf.process.BrokenProcessPool as exc:  # the worker process died
        return (False, exc, 0.0)
    except BaseException as exc:
        return (None, exc, 0.0)
    return _load_outcome(data)


def _start_many(submit: Callable[..., cf.Future[Any]],
                calls: list[tuple[Any, ...]]) -> list[BaseException | None]:
    """Ship ``calls`` (``(node, args, kwargs, report)``) in one ``submit``; report each
    outcome. Returns, per call, the error that kept it from starting, or ``None``."""
    payloads, reports, errors = [], [], []  # type: list[bytes], list[Callable[[Outcome], None]], list[BaseException | None]
    for node, args, kwargs, report in calls:
        try:
            payloads.append(ship(node, args, kwargs))
            reports.append(report)
            errors.append(None)
        except SerializationError as exc:
            errors.append(exc)
    if payloads:
        def done(f: cf.Future[Any]) -> None:
            try:
                outcomes = [_load_outcome(data) for data in f.result()]
            except BaseException:  # the pool broke, or was shut down: as for one node
                ok, error, seconds = _unship(f)
                outcomes = [(ok, error if ok is None else _copy(error), seconds)
                            for _ in reports]  # each node notes its own copy
            for report, outcome in zip(reports, outcomes):
                report(outcome)

        try:
            future = submit(attempt_batch, payloads)
        except Exception as exc:  # the pool would not take them: none started
            copies = iter([exc, *(_copy(exc) for _ in payloads[1:])])
            return [error if error is not None else next(copies) for error in errors]
        future.add_done_callback(done)
    return errors


def _copy(error: BaseException) -> BaseException:
    """A new exception like ``error`` (same type, arguments, cause and traceback)."""
    try:
        copy = type(error)(*error.args)
    except Exception:
        return error
    copy.__cause__ = error.__cause__
    return copy.with_traceback(error.__traceback__)


def _load_outcome(data: bytes) -> Outcome:
    try:
        return pickle.loads(data)  # type: ignore[no-any-return]  # an outcome, unpickled
    except Exception as exc:
        return (False, exc, 0.0)


class ProcessExecutor(_PoolRunner):
    """Runs nodes in a pool of ``max_workers`` worker processes.

    Ops and arguments travel with cloudpickle, so lambdas and local functions
    work; an argument that cannot be pickled fails its node with a
    :class:`~flowdispatch.SerializationError` naming it. On interrupt, the
    worker processes are stopped. An op past its ``timeout`` is stopped in its
    worker (by a SIGALRM, which takes effect when the op runs Python code). The
    worker processes exit when this process dies, even by SIGKILL.
    """

    stops_timeouts = True

    def __init__(self, max_workers: int | None = None, mp_context: str | None = "forkserver"):
        super().__init__()
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers: expected a whole number >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self.slots: int = max_workers or os.cpu_count() or 1
        self.mp_context = mp_context

    def _get_pool(self) -> cf.Executor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context(self.mp_context)
                self._pool = cf.ProcessPoolExecutor(  # workers exit when this process dies
                    self.slots, mp_context=context, initializer=watch_parent,
                    initargs=(os.getpid(),))
            return self._pool

    def start(self, node: Node[Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              report: Callable[[Outcome], None]) -> Outcome | None:
        future = self.submit(attempt_pickled, ship(node, args, kwargs), _timeout(node))
        future.add_done_callback(lambda f: report(_unship(f)))
        return None

    def start_many(self, calls: list[tuple[Any, ...]]) -> list[BaseException | None]:
        """Quick nodes in one round trip to a worker process (see :mod:`.loop`)."""
        return _start_many(self.submit, calls)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        pool = self._get_pool()
        try:
            return pool.submit(fn, *args, **kwargs)
        except cf.process.BrokenProcessPool:  # a worker died earlier: start a new pool
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return self._get_pool().submit(fn, *args, **kwargs)

    def cancel(self) -> None:
        self._shutdown(wait=True, kill=True)

    def close(self) -> None:
        self._shutdown(wait=True)

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers})"


class PoolExecutor(_PoolRunner):
    """Runs nodes on a ``concurrent.futures.Executor`` you own; never shuts it down.

    Examples
    --------
    >>> import concurrent.futures, flowdispatch as fd
    >>> with concurrent.futures.ThreadPoolExecutor(2) as pool:
    ...     fd.compute(fd.op(min)(4, 2), executor=pool)
    (2,)
    """

    _pool: cf.Executor  # given, never None

    def __init__(self, pool: cf.Executor):
        super().__init__()
        if not isinstance(pool, cf.Executor):
            raise TypeError(f"expected a concurrent.futures.Executor, got {type(pool).__name__}")
        self._pool = pool
        self.slots: int = getattr(pool, "_max_workers", None) or os.cpu_count() or 1
        self.stops_timeouts: bool = isinstance(pool, cf.ProcessPoolExecutor)
        if self.stops_timeouts:  # a round trip per call: quick nodes go in batches
            self.start_many: Callable[[list[tuple[Any, ...]]], list[BaseException | None]] = (
                functools.partial(_start_many, pool.submit))

    def _get_pool(self) -> cf.Executor:
        return self._pool

    def start(self, node: Node[Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              report: Callable[[Outcome], None]) -> Outcome | None:
        if isinstance(self._pool, cf.ProcessPoolExecutor):
            future = self._pool.submit(attempt_pickled, ship(node, args, kwargs), _timeout(node))
            future.add_done_callback(lambda f: report(_unship(f)))
            return None
        return super().start(node, args, kwargs, report)

    def __repr__(self) -> str:
        return f"PoolExecutor({self._pool!r})"
