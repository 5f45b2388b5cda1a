"""The narrow backend interface: an executor defined by how it starts one call.

Subclass :class:`SubmitExecutor` and implement :meth:`~SubmitExecutor.submit`,
the ``concurrent.futures`` primitive: start ``fn(*args, **kwargs)`` somewhere
and return a ``concurrent.futures.Future`` of its result. Set ``slots`` to
how many calls may be in flight at once, and override
:meth:`~SubmitExecutor.stop` if your backend can stop a call that is already
running. Everything else comes from the shared run protocol
(:mod:`.record`) and scheduling loop (:mod:`.loop`): dependencies, overrides,
the on-disk cache, retries and their delays, timeouts, states, attempts and
durations, failure propagation, ``fail_fast``, callbacks, progress bars and
the live graph.

The function that ``submit`` is given runs one attempt of one node and never
raises for the op's own exception (it returns it as an outcome), so a future
that raises means the backend itself failed: that node fails with the
future's exception. It is a module-level function, picklable by reference,
and so are its arguments whenever the op and its arguments are.

Examples
--------
>>> import concurrent.futures, threading
>>> import flowdispatch as fd
>>> class OneThreadPerCall(fd.SubmitExecutor):
...     slots = 4
...     def submit(self, fn, /, *args, **kwargs):
...         future = concurrent.futures.Future()
...         def work():
...             try:
...                 future.set_result(fn(*args, **kwargs))
...             except BaseException as exc:
...                 future.set_exception(exc)
...         threading.Thread(target=work, daemon=True).start()
...         return future
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> fd.compute(inc(inc(1)), executor=OneThreadPerCall())
(3,)
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .base import Executor
from .loop import Loop, Outcome, attempt
from .record import RunRecord

if TYPE_CHECKING:
    from ..core.graph import Graph
    from ..core.node import Node
    from ..core.results import Results

__all__ = ["SubmitExecutor"]


def _outcome(future: cf.Future[Outcome]) -> Outcome:
    try:
        return future.result()
    except Exception as exc:  # the backend failed (a broken pool, a lost worker)
        return (False, exc, 0.0)
    except BaseException as exc:  # KeyboardInterrupt/SystemExit inside an op
        return (None, exc, 0.0)


class SubmitExecutor(Executor):
    """An executor that supplies only ``submit``; see the module docstring.

    Attributes
    ----------
    slots : int
        How many calls may be in flight at once (default 1).
    stops_timeouts : bool
        Whether :meth:`stop` stops a call that is running (then an op past its
        ``timeout`` is said to be stopped, not abandoned). Default ``False``.
    """

    slots: int = 1
    stops_timeouts: bool = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flight: dict[str, cf.Future[Any]] = {}  # node key -> its call in flight
        self._abandoned = False

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Start ``fn(*args, **kwargs)``; return a ``concurrent.futures.Future`` of its result."""

    def stop(self, future: cf.Future[Any]) -> bool:
        """Stop a call in flight; whether it stopped. By default ``future.cancel()``,
        which stops only a call that has not started running."""
        return future.cancel()

    def run(self, graph: Graph, *, overrides: dict[str, Any] | None = None,
            fail_fast: bool = False, callbacks: Iterable[Any] = ()) -> Results:
        return Loop(RunRecord(graph, overrides, callbacks, fail_fast), self).go()

    # -- what the loop calls (built-in executors override these for speed) ------------
    def start(self, node: Node[Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              report: Callable[[Outcome], None]) -> Outcome | None:
        """Start one attempt of ``node``; its outcome goes to ``report``."""
        key, flight = node._key, self._flight
        future = self.submit(attempt, node._fn, args, kwargs)
        flight[key] = future

        def done(f: cf.Future[Any]) -> None:
            if flight.get(key) is f:
                del flight[key]
            report(_outcome(f))

        future.add_done_callback(done)
        return None

    def abandon(self, key: str) -> None:
        """Node ``key`` ran past its timeout; the run goes on without it."""
        future = self._flight.pop(key, None)
        if future is None or not self.stop(future):
            self._abandoned = True

    def cancel(self) -> None:
        """After an interrupt: stop every call in flight."""
        for future in list(self._flight.values()):
            self.stop(future)
