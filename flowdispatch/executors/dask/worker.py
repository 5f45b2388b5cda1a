"""What a flowdispatch task does on a dask worker: run one node, a chain, or a batch of them.

A task's function is a :class:`Step`: the node's argument templates and its
op's :class:`Code`, both pickled with cloudpickle on the client (see
:mod:`.lower`). The scheduler only sees those bytes, never the user's code
(it needs ``flowdispatch`` alone); a worker unpickles them, fills in the
dependencies' values, and calls the op, applying the op's retry policy
(:mod:`flowdispatch.core.retry`) between attempts: a retry waits without
holding a worker thread (``secede``/``rejoin``).

A step reports what happens to the client as small events, sent with
``Worker.log_event`` on the topic :data:`TOPIC`: ``[run, key, kind, attempt,
seconds, error]`` where ``kind`` is ``"start"`` (each attempt, when someone
watches for starts: each event is a message through the scheduler), ``"done"``,
``"reloaded"`` (attempt 0: the value came out of the cache, see :class:`Step`),
``"unsaved"`` (before ``"done"``: the value could not be saved to its cache entry;
``error`` is then the reason, as text) or ``"failed"`` (``error`` is then the
pickled exception). A worker sends a task's events before its result, and the
scheduler forwards both in order, so the client learns of a node before it
learns of anything that depends on it.

A node whose op returns nodes (see :mod:`flowdispatch.executors.expand`)
*expands*: its step reports ``"expand"`` with what the op returned (pickled:
the nodes, not their values, which do not exist yet) in place of the error,
and returns :data:`DEFERRED`. A step, chain or batch step given
:data:`DEFERRED` for a dependency does not run and returns it too, without a
word: the client lowers the children, an :class:`Assemble` task that builds
the node's value from theirs, and the nodes downstream again on top of it.

A :class:`Batch` runs independent quick nodes in one task: each step still
reports its own events (those of the steps that complete go together, see
:class:`_Bundle`) and retries on its own; a failed step's exception
takes its place in the batch's tuple of values, so its batch-mates keep
theirs, and :func:`pick` (a dependent's, or a node's own getter task) raises
it again, as dask hands a failed task's exception on to its dependents.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import threading
import time
from array import array
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ...cache import entryfile, load, save, try_save
from ...core.node import as_columns
from ...core.retry import retry_delay
from ...core.traverse import substitute
from ...errors import OpTimeoutError, SerializationError, note_node, stand_in
from ..calls import note_traceback
from ..expand import held

__all__ = ["DEFERRED", "TOPIC", "Assemble", "Batch", "Chain", "Code", "Deferred", "Picking",
           "Step", "Values", "dump_error", "dumps", "pick"]

#: The event topic that steps report on.
TOPIC = "flowdispatch"
#: Longest wait, in seconds, before a batch sends the events of its steps.
BUNDLE = 0.1
_EMPTY: dict[str, Any] = {}
_CLIENT = object()  # Code(check=...) not given: take the client's
#: Kinds of events that a batch sends with the next ones (the others at once).
_QUIET = frozenset({"done", "reloaded", "unsaved"})


@lru_cache(maxsize=64)
def _load_code(code: bytes) -> Any:  # (fn, settings), unpickled
    return pickle.loads(code)


def _worker() -> Any:
    """The dask worker this runs on, or ``None`` (e.g. under ``dask.get``)."""
    try:
        from distributed.worker import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _reporter(run: str | None) -> Callable[..., None] | None:
    """A function that sends an event of ``run`` to the client, or ``None``."""
    worker = None if run is None else _worker()
    if worker is None:
        return None
    return lambda *msg: worker.log_event(TOPIC, [run, *msg])


def _pause(seconds: float) -> None:
    """Wait before a retry without holding one of the worker's threads."""
    try:
        from distributed import rejoin, secede

        secede()
    except Exception:  # not in a worker's task thread
        time.sleep(seconds)
        return
    try:
        time.sleep(seconds)
    finally:
        rejoin()


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], key: str, timeout: float | None) -> Any:
    """``fn(*args, **kwargs)``; past ``timeout`` seconds, raise ``OpTimeoutError`` instead.

    The op then runs in a thread of its own, which cannot be stopped: at the
    deadline it is abandoned (and the worker's thread goes on to other work).
    """
    if timeout is None:
        return fn(*args, **kwargs)
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, fn(*args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 - handed to the task's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name=f"flowdispatch-{key}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise OpTimeoutError(
            f"node {key!r} ran longer than its timeout of {timeout:g} s; it was abandoned: "
            "a thread cannot be stopped, so it runs on until the op returns")
    ok, result = outcome[0]
    if not ok:
        raise result
    return result


def dump_error(error: BaseException) -> bytes:
    """The exception, pickled with its traceback as a note (formatted here, with the op's
    source lines), or, if it cannot be pickled or unpickled, a
    :func:`~flowdispatch.errors.stand_in` with its type's name, message and notes."""
    import cloudpickle

    note_traceback(error, "the dask worker")
    try:
        data = cloudpickle.dumps(error)
        pickle.loads(data)  # an exception whose __init__ its args do not fit fails here
        return data
    except Exception as exc:
        return cloudpickle.dumps(stand_in(error, exc))


#: Values that always pickle: a result of these types is not checked.
_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})


def check_picklable(value: Any, key: str) -> None:
    """Raise a :class:`~flowdispatch.SerializationError` naming node ``key`` if ``value``
    cannot be pickled (dask would fail later, where it sends the value, naming no node).

    Buffers (numpy arrays, bytes-likes) are not copied: pickle protocol 5 hands them out.
    """
    if type(value) in _PLAIN:
        return
    try:
        pickle.dumps(value, protocol=5, buffer_callback=lambda buffer: None)
    except Exception:
        import cloudpickle

        try:
            cloudpickle.dumps(value, protocol=5, buffer_callback=lambda buffer: None)
        except Exception as exc:
            raise SerializationError(
                f"node {key!r} returned a value of type {type(value).__name__} that could not "
                f"be pickled ({exc}), so it cannot travel to the client or another dask "
                "worker. Return a picklable value, or use a thread-based executor.") from None


class _Quiet(logging.Filter):
    """Drops distributed's "Compute Failed" log record for the tasks in :attr:`keys`:
    failures of ops that the client hears of (they are in its Results)."""

    keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Compute Failed") and record.args:
            key = record.args[0]  # type: ignore[index]
            if key in self.keys:
                self.keys.discard(key)
                return False
        return True


def _keep_quiet(dask_key: str) -> None:
    """Keep the worker's log free of the failure of task ``dask_key``."""
    if not _Quiet.keys:  # the first time in this process: install the filter
        logger = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _Quiet) for f in logger.filters):
            logger.addFilter(_Quiet())
    if len(_Quiet.keys) > 10_000:  # keys of chain steps are never logged: do not pile up
        _Quiet.keys.clear()
    _Quiet.keys.add(dask_key)


def _save(report: Callable[..., None] | None, key: str, store: str, value: Any) -> None:
    """Save node ``key``'s value to its cache entry ``store``; if that fails, tell the
    client (if it listens: a worker's warnings go to its log, where nobody looks)."""
    if report is None:
        save(store, value)
        return
    problem = try_save(store, value)
    if problem is not None:
        report(key, "unsaved", 0, 0.0, problem)


def _failed(report: Callable[..., None] | None, step: Step, attempt: int, seconds: float,
            error: BaseException) -> None:
    """Tell the client (if it listens) that node ``step.key`` failed for good."""
    if report:
        report(step.key, "failed", attempt, seconds, dump_error(error))
        _keep_quiet(f"{step.key}-{step.op.run}")


def secret_check() -> bytes | None:
    """What tells whether two processes have the same ``cache_secret``: ``None``
    without one, else an HMAC of a fixed message under it (the secret itself never
    travels; entries in the cache folder already carry HMACs under it)."""
    import hmac

    try:
        chosen = entryfile.secret()
    except (TypeError, ValueError):
        return b"unusable"  # the cache reads nothing with it, on either side
    if chosen is None:
        return None
    return hmac.digest(chosen, b"flowdispatch: the cache secret in use", "sha256")


class Deferred:
    """The value of a task whose node expanded, or that needed such a task's value: the
    node's value is made elsewhere, by the tasks the client submits once it hears."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Callable[[], Deferred], tuple[()]]:
        return (_deferred, ())

    def __repr__(self) -> str:
        return "<flowdispatch deferred: the node expanded>"


#: The one :class:`Deferred`.
DEFERRED = Deferred()


def _deferred() -> Deferred:
    return DEFERRED


def _deferring(values: tuple[Any, ...]) -> bool:
    """Whether one of a task's dependency values is :data:`DEFERRED`."""
    for value in values:
        if type(value) is Deferred:
            return True
    return False


class Code:
    """An op as it travels: its name, the pickled ``(fn, settings)``, and the run to report to.

    One per op and run, shared by the op's steps, so a graph pickles it once.
    ``check`` is the client's :func:`secret_check` (taken when made on the
    client): a step loads a cache entry only where the worker has the same
    secret, so that what the client's cache would refuse (an unsigned entry,
    when only the client has a secret) runs again, as on the client.
    """

    __slots__ = ("name", "code", "run", "starts", "check")
    name: str
    code: bytes
    run: str | None
    starts: bool
    check: object

    def __init__(self, name: str, code: bytes, run: str | None, starts: bool = True,
                 check: bytes | None | object = _CLIENT):
        self.name = name
        self.code = code
        self.run = run  # None: report nothing (futures from submit())
        self.starts = starts  # report each attempt's start too (someone watches for it)
        self.check = secret_check() if check is _CLIENT else check

    def __reduce__(self) -> tuple[type[Code], tuple[str, bytes, str | None, bool, object]]:
        return (Code, (self.name, self.code, self.run, self.starts, self.check))


class Step:
    """One node as a dask task's function: ``step(*dep_values)`` runs it on a worker.

    A node of a cached op (``store``: its cache entry) looks in the cache first:
    when dask runs its task again because the value was lost with a worker, or
    another run saved it meanwhile, the entry is loaded (checked and verified as
    :func:`flowdispatch.cache.load` does) and reported as ``"reloaded"``; the op
    runs when there is no entry it can trust, or when the worker's cache secret
    is not the client's (see :class:`Code`).
    """

    __slots__ = ("op", "key", "call", "deps", "store")
    op: Code
    key: str
    call: bytes | None
    deps: tuple[str, ...]
    store: str | None

    def __init__(self, op: Code, key: str, call: bytes | None, deps: tuple[str, ...],
                 store: str | None = None):
        self.op = op
        self.key = key
        self.call = call  # cloudpickle of the (args, kwargs) templates, or None
        self.deps = deps  # the keys whose values the task passes, in order
        self.store = store  # the cache file to save the value to, if any

    def __reduce__(self) -> tuple[type[Step], tuple[Code, str, bytes | None, tuple[str, ...],
                                                    str | None]]:
        return (Step, (self.op, self.key, self.call, self.deps, self.store))

    @property
    def __name__(self) -> str:  # what dask shows for the task
        return self.op.name

    def __repr__(self) -> str:
        return f"<flowdispatch step {self.key!r}>"

    def __call__(self, *values: Any) -> Any:
        return self.run(values, _reporter(self.op.run))

    def run(self, values: tuple[Any, ...], report: Callable[..., None] | None) -> Any:
        """Run the node on ``values`` (its dependencies'), sending events to ``report``."""
        key = self.key
        if values and _deferring(values):
            return DEFERRED  # an upstream node expanded: the client runs this again later
        if self.store is not None and self.op.check == secret_check():
            found, value = load(self.store)
            if found:
                if report:
                    report(key, "reloaded", 0, 0.0, None)
                return value
        try:
            fn, settings = _load_code(self.op.code)
            args, kwargs = pickle.loads(self.call) if self.call is not None else ((), _EMPTY)
        except Exception as exc:
            exc.add_note(f"flowdispatch: node {key!r} could not be unpickled on the dask "
                         "worker; the modules of its op and arguments must be importable there")
            _failed(report, self, 1, 0.0, exc)
            raise
        if self.deps:
            known = dict(zip(self.deps, values))
            args, kwargs = substitute(args, known), substitute(kwargs, known)
        for attempt in itertools.count(1):
            if report and self.op.starts:
                report(key, "start", attempt, 0.0, None)
            start = time.perf_counter()
            try:
                result = _call(fn, args, kwargs, key, settings and settings.timeout)
            except Exception as exc:
                seconds = time.perf_counter() - start
                delay = retry_delay(settings, exc, attempt)
                if delay is None:
                    _failed(report, self, attempt, seconds, note_node(exc, key))
                    raise
                if delay:
                    _pause(delay)
                continue
            seconds = time.perf_counter() - start
            if report and settings is not None and held(result) is not None:
                return _expanded(report, self, attempt, seconds, result)
            try:
                check_picklable(result, key)
            except SerializationError as exc:
                _failed(report, self, attempt, seconds, note_node(exc, key))
                raise
            if self.store is not None:
                _save(report, key, self.store, result)
            if report:
                report(key, "done", attempt, seconds, None)
            return result
        raise AssertionError("unreachable")  # pragma: no cover


def _expanded(report: Callable[..., None], step: Step, attempt: int, seconds: float,
              result: Any) -> Deferred:
    """Tell the client that node ``step.key`` returned nodes: what it returned travels."""
    try:
        data = dumps(as_columns(result))
    except Exception as exc:
        error = SerializationError(
            f"node {step.key!r} returned nodes that could not be pickled ({exc}), so they "
            "cannot travel to the client, which runs them")
        _failed(report, step, attempt, seconds, note_node(error, step.key))
        raise error from None
    report(step.key, "expand", attempt, seconds, data)
    return DEFERRED


def dumps(value: Any) -> bytes:
    """``value`` pickled: plainly where that will do (a list of nodes of importable ops,
    or of references: several times faster), else with cloudpickle.

    Plain pickle refers to functions and classes by name, and refuses those that
    cannot be found by their names (defined in a function, or sent by value).
    """
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(value)


class Assemble:
    """The value of an expanded node, as a dask task: ``assemble(*child_values)`` puts
    each child's value in place of the child in what the node's op returned (saved to
    the node's cache file ``store``, if any)."""

    __slots__ = ("key", "returned", "deps", "store")

    def __init__(self, key: str, returned: bytes | None, deps: tuple[str, ...],
                 store: str | None = None):
        self.key = key
        #: the template, pickled (nodes replaced by references, see :func:`dumps`); or
        #: ``None``: the node returned the list of its children, its value is theirs.
        self.returned = returned
        self.deps = deps
        self.store = store

    def __reduce__(self) -> tuple[type[Assemble], tuple[Any, ...]]:
        return (Assemble, (self.key, self.returned, self.deps, self.store))

    @property
    def __name__(self) -> str:
        return "assemble"

    def __repr__(self) -> str:
        return f"<flowdispatch assembling {self.key!r}>"

    def __call__(self, *values: Any) -> Any:
        if _deferring(values):
            return DEFERRED  # a child expanded in turn: the client assembles it again
        if self.returned is None:
            value: Any = list(values)
        else:
            value = substitute(pickle.loads(self.returned), dict(zip(self.deps, values)))
        if self.store is not None:
            save(self.store, value)
        return value


class Chain:
    """A linear chain of steps as one dask task: ``chain(*values)`` runs them in turn.

    Each step still reports its own events, so every node keeps its own state,
    attempts and duration; only the scheduler round trips between them go.
    """

    __slots__ = ("steps",)
    steps: tuple[Step, ...]

    def __init__(self, steps: tuple[Step, ...]):
        self.steps = steps

    def __reduce__(self) -> tuple[type[Chain], tuple[tuple[Step, ...]]]:
        return (Chain, (self.steps,))

    @property
    def __name__(self) -> str:
        return self.steps[-1].op.name

    def __repr__(self) -> str:
        return f"<flowdispatch chain of {len(self.steps)} steps to {self.steps[-1].key!r}>"

    def __call__(self, *values: Any) -> Any:
        try:
            value = self.steps[0](*values)
            for step in self.steps[1:]:
                value = step(value)
        except Exception:
            last = self.steps[-1]
            if last.op.run is not None:  # the step told the client
                _keep_quiet(f"{last.key}-{last.op.run}")
            raise
        return value


class _Bundle:
    """The events of a batch's steps, sent a few at a time: a failure (the client may
    stop the run on it) or a start (sent only when someone watches for starts) at
    once, with those before it; the others every :data:`BUNDLE` seconds and at the end.

    Every event goes through the scheduler; one for each of thousands of quick nodes
    would cost more than the nodes do. A bundle is ``[run, [event, ...], batch,
    places, attempts, seconds]``: the steps that completed (before the events)
    are three packed arrays (their places in the batch named ``batch``, their
    attempts and durations), which the scheduler and the client pass on and
    read at once; thousands of events as lists of strings and numbers would
    keep both busy (on a local cluster, they share the process and its GIL).
    """

    __slots__ = ("worker", "run", "batch", "at", "events", "places", "attempts", "seconds",
                 "since")

    def __init__(self, worker: Any, run: str | None, batch: str):
        self.worker = worker
        self.run = run
        self.batch = batch
        self.at = 0  # the place in the batch of the step that runs
        self.events: list[Any] = []
        self._clear()

    def _clear(self) -> None:
        self.places, self.attempts, self.seconds = array("I"), array("I"), array("d")
        self.since = time.perf_counter()

    @classmethod
    def of(cls, run: str | None, batch: str) -> _Bundle | None:
        worker = None if run is None else _worker()
        return None if worker is None else cls(worker, run, batch)

    def __call__(self, key: str, kind: str, attempt: int, seconds: float, error: Any) -> None:
        if kind == "done":
            self.places.append(self.at)
            self.attempts.append(attempt)
            self.seconds.append(seconds)
        else:
            self.events.append([key, kind, attempt, seconds, error])
        if kind not in _QUIET or time.perf_counter() - self.since > BUNDLE:
            self.flush()

    def flush(self) -> None:
        if self.events or self.places:
            self.worker.log_event(TOPIC, [self.run, self.events, self.batch, self.places.tobytes(),
                                          self.attempts.tobytes(), self.seconds.tobytes()])
            self.events = []
        self._clear()


class _Failed:
    """A failed step's exception, in its batch's values."""

    __slots__ = ("error",)
    error: BaseException

    def __init__(self, error: BaseException):
        self.error = error

    def __reduce__(self) -> tuple[type[_Failed], tuple[BaseException]]:
        return (_Failed, (self.error,))


def pick(values: tuple[Any, ...], index: int) -> Any:
    """The value of a batch's node ``index``; its exception, raised, if it failed.

    Examples
    --------
    >>> pick((1, 2), 1)
    2
    """
    value = values[index]
    if type(value) is _Failed:
        raise value.error
    return value


class Picking:
    """A task's function whose arguments come partly out of batches' tuples.

    ``plan`` holds, for each argument of ``func``, ``(source, index)``: the
    task's argument ``source``, or item ``index`` of it (a batch's tuple) when
    ``index >= 0``. So a task needs each batch once, however many of its nodes
    it takes. A failed node's value raises its exception, except for a
    :class:`Batch` (``soft``), which skips the steps that need it.

    Examples
    --------
    >>> Picking(max, ((0, 1), (1, -1)))((5, 7), 6)
    7
    """

    __slots__ = ("func", "plan")
    func: Any  # a Step, Chain or Batch
    plan: tuple[tuple[int, int], ...]

    def __init__(self, func: Any, plan: tuple[tuple[int, int], ...]):
        self.func = func
        self.plan = plan

    def __reduce__(self) -> tuple[type[Picking], tuple[Any, tuple[tuple[int, int], ...]]]:
        return (Picking, (self.func, self.plan))

    @property
    def __name__(self) -> str:
        return getattr(self.func, "__name__", "picking")

    def __repr__(self) -> str:
        return f"<flowdispatch picking for {self.func!r}>"

    def __call__(self, *sources: Any) -> Any:
        get = _item if isinstance(self.func, Batch) else pick
        return self.func(*[sources[s] if i < 0 else get(sources[s], i) for s, i in self.plan])


def _item(values: tuple[Any, ...], index: int) -> Any:
    return values[index]


class Values(tuple[Any, ...]):
    """A batch's values: a tuple that dask sends between workers as one pickle.

    A worker sends the items of a plain tuple (or list, set, dict) one by
    one, each with its own header: about 17 µs an item, more than a quick
    node takes to run.
    """

    __slots__ = ()


class Batch:
    """Independent steps of one op as one dask task: ``batch(*values)`` runs them in turn.

    ``values`` are the steps' dependency values, one after the other (those
    from other batches as they are there: a failed one skips its step, which
    the client marks failed upstream). The task returns a tuple with each
    step's value, or its exception if it failed.

    The steps are kept as columns (their keys, calls, dependencies and cache
    files), which pickle as a few tuples of strings and bytes: a batch is
    pickled on the client, unpickled and pickled again by the scheduler, and
    unpickled on a worker, and thousands of :class:`Step` objects would cost
    more each time than their nodes take to run.
    """

    __slots__ = ("name", "op", "keys", "calls", "deps", "stores")
    name: str
    op: Code
    keys: tuple[str, ...]
    calls: tuple[bytes | None, ...]
    deps: tuple[tuple[str, ...], ...]
    stores: tuple[str | None, ...] | None

    def __init__(self, name: str, op: Code, keys: tuple[str, ...],
                 calls: tuple[bytes | None, ...], deps: tuple[tuple[str, ...], ...],
                 stores: tuple[str | None, ...] | None = None):
        self.name = name  # unique in its run: its completed steps are reported by it
        self.op = op
        self.keys = keys
        self.calls = calls
        self.deps = deps
        self.stores = stores  # None: no step saves its value

    @classmethod
    def of(cls, name: str, steps: tuple[Step, ...]) -> Batch:
        """The batch ``name`` of ``steps`` (of one op)."""
        stores = tuple(s.store for s in steps)
        return cls(name, steps[0].op, tuple(s.key for s in steps), tuple(s.call for s in steps),
                   tuple(s.deps for s in steps), stores if any(stores) else None)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The batch's steps, in order."""
        stores = self.stores or (None,) * len(self.keys)
        return tuple(Step(self.op, *step) for step in zip(self.keys, self.calls, self.deps, stores))

    def __reduce__(self) -> tuple[type[Batch], tuple[Any, ...]]:
        return (Batch, (self.name, self.op, self.keys, self.calls, self.deps, self.stores))

    @property
    def __name__(self) -> str:
        return self.op.name

    def __repr__(self) -> str:
        return f"<flowdispatch batch of {len(self.keys)} steps from {self.keys[0]!r}>"

    def __call__(self, *values: Any) -> Values:
        report = _Bundle.of(self.op.run, self.name)
        try:
            return self._run(values, report)
        finally:
            if report is not None:
                report.flush()

    def _run(self, values: tuple[Any, ...], report: _Bundle | None) -> Values:
        out: list[Any] = []
        at = 0
        for place, step in enumerate(self.steps):
            if report is not None:
                report.at = place
            width = len(step.deps)
            args = values[at:at + width]
            if width:
                at += width
                failed = next((v for v in args if type(v) is _Failed), None)
                if failed is not None:
                    out.append(failed)
                    continue
            try:
                out.append(step.run(args, report))
            except Exception as exc:  # reported by the step; its batch-mates go on
                out.append(_Failed(exc))
        return Values(out)
