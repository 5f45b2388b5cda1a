"""The dask executor: a whole graph lowered to one submission on a dask cluster.

:class:`DaskExecutor` connects to a running scheduler, uses a given
``Client``, or starts an embedded ``LocalCluster`` on 127.0.0.1. A run lowers
the graph (:mod:`.lower`: one task per node), submits it with one
``Client.get``, and follows it through two streams in the calling thread: the
events that the tasks report (start, done, failed: so the state, attempts and
duration of every node, and which node failed first) and the targets'
futures. Only the targets' values travel back.

A run's dask keys are its node keys with the run's own suffix,
``"<node key>-<run>"``, so ``dask.utils.key_split`` still gives the op name
(the dashboard groups tasks by op) while no two runs share a task: the
scheduler would hand back a key it still knows (erred, say) instead of
running it again, and its late reports on a key would reach the next run's
futures. :meth:`DaskExecutor.submit` (and so ``fd.submit``/``fd.persist``)
uses the node keys themselves, as dask collections do.

A node whose op returns nodes expands on the client, as its task's report
comes in: the run record takes the nodes in, and the run submits them, and
the task that builds the node's value (with them, unless they are of ops seen
to expand; else once they have completed), as more graphs on the same cluster
(:mod:`.grow`); the values stay on the workers.

The run holds a future for every node it computes and lets go of each one
as soon as every dependent has finished, so the scheduler frees values as the
local loop does. A value that a failed or cancelled node still needs is kept,
and brought back with the results, so that :meth:`Results.rerun
<flowdispatch.Results.rerun>` goes on from there. With ``fail_fast`` (as
:func:`flowdispatch.compute` runs) only the targets are held, and the first
failure cancels the rest on the cluster; so does an interrupt.

Worker loss is the scheduler's business: a task that was running on a lost
worker runs again elsewhere (dask's ``allowed-failures``). Such a run counts in
``attempts`` when the client can tell that it ran: the client hears of every
lost worker with the tasks it held (the scheduler's ``remove-worker`` event).
A held task counts if its start was heard (starts are reported when someone
watches them: each is a message), or else if it was the run's only task
there (a task merely queued on a worker is not a run). A task of a fused
chain is not counted: which step died is not known. A cluster left without any worker for
``no_workers_timeout`` seconds ends the run: the nodes left fail with an
:class:`~flowdispatch.ExecutorError` that names them. The states, durations
and attempts of the nodes that finished are kept, and so are their values
that are on the client (overrides, and cached values on disk); the values
that lived only on the lost workers are gone. A value lost with a worker is
recomputed by dask, except that the task of an op declared ``cache=True``
loads the value from the cache when its entry is there (:class:`.worker.Step`):
it counts in ``Results.reloads``, not in ``attempts``.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import pickle
import threading
import time
import weakref
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ... import config
from ...core.gcpause import paused_gc
from ...core.graph import Graph, as_nodes
from ...errors import CacheWarning, ExecutorError, SecurityWarning, SerializationError
from ..base import Executor
from ..record import RunRecord
from ..registry import is_client
from . import quick
from .grow import grow, settle
from .lower import Lowered
from .worker import TOPIC, Chain

if TYPE_CHECKING:
    from distributed import Client, Future

    from ...core.node import Node
    from ...core.results import Results

__all__ = ["DaskExecutor"]

# Longest blocking wait in a run, so that an interrupt is seen promptly.
_POLL = 0.1
_IDLE = 3  # quiet polls with nothing left on the cluster before a run is stranded
_DONE = "batch-done"  # an inbox's entry for the steps that a batch completed
#: Kinds of events that end a node well: only a target's wakes a fail-fast run.
_ENDED = frozenset({"done", "reloaded", "unsaved"})  # events nobody waits for, but an end


#: How long the tasks of an embedded cluster wait for a worker that can run them.
NO_WORKERS_TIMEOUT = "60s"


def _tuned() -> dict[str, Any]:
    """Settings for an embedded cluster that the user has not chosen otherwise.

    Without root-task queuing (``worker-saturation: inf``) a fan-out of tiny
    tasks runs 2-4x faster; queuing only pays off for large root tasks. And a
    task that no worker can run (every worker gone, or none with the
    resources it asks for) fails after :data:`NO_WORKERS_TIMEOUT` instead of
    waiting for ever.
    """
    import dask.config

    tuned: dict[str, Any] = {}
    if dask.config.get("distributed.scheduler.worker-saturation") == 1.1:  # dask's default
        tuned["distributed.scheduler.worker-saturation"] = math.inf
    if dask.config.get("distributed.scheduler.no-workers-timeout", None) is None:
        tuned["distributed.scheduler.no-workers-timeout"] = NO_WORKERS_TIMEOUT
    return tuned


def _warn_if_exposed(address: str) -> None:
    """Warn when ``address`` is a plain-TCP scheduler on another machine."""
    import ipaddress
    import socket
    import warnings

    scheme, _, rest = address.rpartition("://")
    if scheme not in ("", "tcp"):
        return  # tls://, inproc://, ucx://: encrypted or local
    host = rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        try:
            loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return  # unresolvable: connecting will say so
    if not loopback:
        warnings.warn(
            f"connecting to the dask scheduler at {address!r} over plain TCP: anyone who can "
            "reach that port can run code on the workers, and the data travels unencrypted. "
            "Use tls:// with security=distributed.security.Security(...), an SSH tunnel to "
            "127.0.0.1, or a private network (see the docs' cluster how-to).",
            SecurityWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _loopback_cluster() -> type:
    """A ``LocalCluster`` whose dashboard link names 127.0.0.1, where its dashboard listens.

    With in-process comms (``processes=False``) the scheduler's address is
    ``inproc://<this machine's address>/...``, and dask builds the link from
    that host: an address where nothing listens (the dashboard is bound to
    127.0.0.1 here).
    """
    from distributed import LocalCluster
    from distributed.utils import format_dashboard_link

    class LoopbackCluster(LocalCluster):
        @property
        def dashboard_link(self) -> str:
            try:
                port = self.scheduler_info["services"]["dashboard"]
            except KeyError:
                return ""
            return str(format_dashboard_link("127.0.0.1", port))

    return LoopbackCluster


def _configured_address() -> str | None:
    """dask's ``scheduler-address`` setting, if it is set (as ``distributed.Client()`` reads it)."""
    import dask.config

    return dask.config.get("scheduler-address", None) or None


class DaskExecutor(Executor):
    """Runs graphs on a dask cluster, each graph lowered to one submission.

    Parameters
    ----------
    address
        A running ``dask scheduler``, such as ``"tcp://127.0.0.1:8786"``. Without
        ``address``, ``client`` or cluster options, dask's ``scheduler-address``
        setting (``DASK_SCHEDULER_ADDRESS``) is used when it is set, as
        ``distributed.Client()`` does; else an embedded cluster is started.
    client
        A ``distributed.Client`` to use; it is never closed here.
    connect_timeout
        Seconds to wait for the scheduler at ``address``.
    fuse
        Fold linear chains of ops into one task each in ``compute`` (not in
        ``run``, which keeps every intermediate value reachable for ``rerun``).
        Each dependent hop on a cluster costs milliseconds of scheduler round
        trips, whatever the op; nodes keep their own states and timings.
    no_workers_timeout
        Seconds a run waits while the cluster has no worker at all; then the
        nodes left fail with an :class:`~flowdispatch.ExecutorError` naming
        them. Default: the setting ``no_workers_timeout`` (60 s). dask itself
        would wait for ever on a cluster it did not start.
    security
        A ``distributed.security.Security`` (TLS certificates) for the
        connection to ``address``, or for the embedded cluster, where ``True``
        makes temporary credentials (this needs the ``cryptography`` package).
        Connecting to a scheduler on another machine over plain ``tcp://``
        gives a :class:`~flowdispatch.SecurityWarning`: whoever can reach its
        port can run code on its workers.
    **cluster_kwargs
        Without ``address`` or ``client``: options of the embedded
        ``distributed.LocalCluster``. It is bound to 127.0.0.1 (its dashboard
        too, on a free port), started on first use and closed with the
        executor; unless dask's config says otherwise, its scheduler does not
        queue root tasks (``worker-saturation: inf``), which suits many small
        tasks, and fails a task that no worker can run after a minute
        (``no-workers-timeout: 60s``) rather than waiting for ever.

    Notes
    -----
    Ops and their arguments are pickled on the client; the workers need
    ``flowdispatch`` and the modules the ops use, the scheduler ``flowdispatch``.
    A task whose worker dies runs again on another worker, so ops may run more
    than once: keep their side effects idempotent.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> from flowdispatch.executors.dask import DaskExecutor
    >>> inc = fd.op(lambda x: x + 1, name="inc")
    >>> with DaskExecutor(n_workers=1, processes=False) as ex:
    ...     fd.compute(inc(inc(1)), executor=ex)
    (3,)
    """

    def __init__(self, address: str | None = None, client: Client | None = None, *,
                 connect_timeout: float = 10.0, fuse: bool = True, security: Any = None,
                 no_workers_timeout: float | None = None, **cluster_kwargs: Any):
        if address is not None and client is not None:
            raise TypeError("DaskExecutor: expected address= or client=, got both")
        if address is None and client is None and not cluster_kwargs and security is not True:
            address = _configured_address()
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address: expected a scheduler address such as "
                            f"'tcp://127.0.0.1:8786', got {type(address).__name__}")
        if client is not None and not is_client(client):
            raise TypeError(f"client: expected a distributed.Client, got {type(client).__name__}")
        if cluster_kwargs and (address is not None or client is not None):
            raise TypeError(f"DaskExecutor: cluster options {sorted(cluster_kwargs)} apply only "
                            "to the embedded cluster, not with address= or client=")
        if not isinstance(connect_timeout, (int, float)) or connect_timeout <= 0:
            raise ValueError(f"connect_timeout: expected seconds > 0, got {connect_timeout!r}")
        if no_workers_timeout is not None and (
                not isinstance(no_workers_timeout, (int, float)) or no_workers_timeout <= 0):
            raise ValueError(f"no_workers_timeout: expected seconds > 0, got {no_workers_timeout!r}")
        if not isinstance(fuse, bool):
            raise TypeError(f"fuse: expected True or False, got {fuse!r}")
        if security is not None and client is not None:
            raise TypeError("security: the given client holds its own credentials; "
                            "expected security= only with address= or an embedded cluster")
        if security is True and address is not None:
            raise TypeError("security=True makes temporary credentials, which only an embedded "
                            "cluster can use; for address= pass a distributed.security.Security")
        if address is not None and security is None:
            _warn_if_exposed(address)
        self.address = address
        self.connect_timeout = connect_timeout
        self.fuse = fuse
        self.no_workers_timeout = no_workers_timeout
        self.security = security
        self.cluster_kwargs = cluster_kwargs
        self._given = client
        self._client: Client | None = client
        self._cluster: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        if self._given is not None:
            return f"DaskExecutor(client={self._given!r})"
        if self.address is not None:
            return f"DaskExecutor(address={self.address!r})"
        options = ", ".join(f"{k}={v!r}" for k, v in self.cluster_kwargs.items())
        return f"DaskExecutor({options})"

    # -- connecting ------------------------------------------------------------------
    @property
    def client(self) -> Client | None:
        """The client in use; ``None`` until the first run or :meth:`connect`."""
        return self._client

    @property
    def cluster(self) -> Any:
        """The embedded ``LocalCluster`` once started, else ``None``."""
        return self._cluster

    def connect(self) -> Client:
        """The client; connects, or starts the embedded cluster, on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._start()
            return self._client

    def _start(self) -> Client:
        import dask.config
        from distributed import Client, LocalCluster

        if self.address is not None:
            try:
                return Client(self.address, timeout=self.connect_timeout, set_as_default=False,
                              security=self.security)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(
                    f"could not connect to a dask scheduler at {self.address!r} within "
                    f"{self.connect_timeout:g} s ({exc}). Check that `dask scheduler` runs "
                    "there and that the address and port are right, or use executor='dask' "
                    "for a local cluster."
                ) from exc
        options: dict[str, Any] = {"dashboard_address": "127.0.0.1:0"}
        kind: type = LocalCluster
        if self.cluster_kwargs.get("processes") is False and "protocol" not in self.cluster_kwargs:
            options["worker_dashboard_address"] = "127.0.0.1:0"  # in-process comms: no host
            if "dashboard_address" not in self.cluster_kwargs:
                kind = _loopback_cluster()
        else:
            options["host"] = "127.0.0.1"
        if self.security is not None:
            options["security"] = self.security
        options.update(self.cluster_kwargs)
        with dask.config.set(_tuned()):
            cluster = kind(**options)
        try:
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        self._cluster = cluster
        return client

    def close(self) -> None:
        """Close the client and cluster this executor made; never a given client."""
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client, self._cluster = self._given, None
        if client is not None and client is not self._given:
            client.close()
        if cluster is not None:
            cluster.close()

    # -- futures ---------------------------------------------------------------------
    def submit(self, *targets: Any) -> dict[Node[Any], Future[Any]]:
        """Start computing the targets on the cluster: ``{node: distributed.Future}``.

        Each future's key is its node's key; the ancestors run on the cluster
        and their values stay there. A failed op's own exception is its
        future's (and its dependents'), as in dask.

        Raises
        ------
        SerializationError
            Before anything is submitted, if a node's op or argument cannot be pickled.
        """
        nodes = as_nodes(targets)
        lowered = Lowered(Graph(*nodes), {}, run=None, tag=None, stop_at_first=True)
        if lowered.broken:
            raise next(iter(lowered.broken.values()))
        keys = [n._key for n in nodes]
        futures = self.connect().get(lowered.expression(), keys, sync=False)
        return dict(zip(nodes, futures))

    # -- running ---------------------------------------------------------------------
    def run(self, graph: Graph, *, overrides: dict[str, Any] | None = None,
            fail_fast: bool = False, callbacks: Iterable[Any] = ()) -> Results:
        record = RunRecord(graph, overrides, callbacks, fail_fast)
        record.remote = set()  # values stay on the workers; expanded nodes are built there
        run_id = os.urandom(6).hex()
        replayed = [k for k in record.returned if k not in record.states]  # a rerun's
        with paused_gc():
            lowered = Lowered(record.graph, record.overrides, run=run_id, tag=run_id,
                              stop_at_first=fail_fast, starts=bool(record.hooks["on_node_start"]),
                              stores=record.stores, defer=replayed)
        if replayed:  # they expand again from what their ops returned, without running
            grown = _grown(lowered)
            for key in replayed:
                grow(grown, record, key, _joined(record, key), lambda k: k in lowered.tasks)
            _merge(lowered, grown)
        targets = {t._key for t in record.graph.targets}
        if fail_fast and self.fuse:  # run() keeps every value reachable for rerun()
            lowered.fuse(targets)
        client = self.connect()
        threads = sum(client.nthreads().values()) if lowered.kinds else 0  # 0: not asked
        if lowered.kinds:  # quick ops' nodes share tasks (run(): each keeps a getter)
            with paused_gc():
                lowered.probe(threads)  # ops never measured: a few nodes first, the rest later
                lowered.batch(targets if fail_fast else None, threads)
        patience = self.no_workers_timeout
        if patience is None:
            patience = float(config.get("no_workers_timeout"))
        results = _Run(client, record, lowered, run_id, patience, threads).go()
        quick.observe(lowered.timings(record.durations))
        return results


def _joined(record: RunRecord, parent: str) -> list[Node[Any]]:
    """The nodes that joined the run because ``parent`` expanded (dependencies first)."""
    return [record.nodes[k] for k, p in record.parents.items() if p == parent]


def _grown(lowered: Lowered) -> Lowered:
    """An empty lowering, to grow the run of ``lowered`` by (see :mod:`.grow`)."""
    grown = Lowered([], {}, run=lowered.run, tag=lowered.tag, starts=lowered.starts,
                    stores=lowered.stores, alias=lowered.alias)
    grown._ops, grown.ops = lowered._ops, lowered.ops
    grown.numbers, grown.batches = lowered.numbers, lowered.batches
    return grown


def _merge(lowered: Lowered, grown: Lowered) -> None:
    """Take the tasks of ``grown`` (see :func:`.grow.grow`) into the run's ``lowered``."""
    lowered.tasks.update(grown.tasks)
    lowered.node_keys.update(grown.node_keys)
    lowered.kinds.update(grown.kinds)
    lowered.annotations.update(grown.annotations)
    lowered.scatter.update(grown.scatter)
    lowered.picks.update(grown.picks)
    if grown.later:  # held back for its probes (see _Run._probed)
        lowered.later |= grown.later
        lowered.probes = [*lowered.probes, *grown.probes]


# -- following a run ---------------------------------------------------------------------
class _Inbox:
    """The events of one run, handed from the client's event loop to the run's thread.

    Waking a thread costs more than handling the event (on a LocalCluster the
    scheduler shares the process, and so the GIL), so the run's thread is
    woken only by the events that ``urgent(key, kind)`` says it waits for,
    and takes the others, in order, along with them.
    """

    __slots__ = ("events", "urgent", "wake")

    def __init__(self, urgent: Callable[[str, str], bool]):
        self.events: collections.deque[tuple[Any, ...]] = collections.deque()
        self.urgent = urgent
        self.wake = threading.Event()

    def put(self, event: tuple[Any, ...]) -> None:
        self.events.append(event)
        if self.urgent(event[0], event[1]):
            self.wake.set()

    def take(self, timeout: float) -> list[tuple[Any, ...]]:
        """The events so far, after waiting up to ``timeout`` seconds for an urgent one."""
        self.wake.wait(timeout)
        self.wake.clear()
        events = self.events
        return [events.popleft() for _ in range(len(events))]


class _Router:
    """Hands the events on a client's topic to the inbox of the run they belong to.

    It runs on the client's event loop, in the order the scheduler sent the
    messages (an event, or a batch's bundle of them, see :class:`.worker._Bundle`).
    Errors are unpickled here, so that their tracebacks (rebuilt by tblib) hang
    off the loop's long-lived frames rather than a run's.
    """

    def __init__(self) -> None:
        self.runs: dict[str, _Inbox] = {}

    def __call__(self, event: tuple[Any, ...]) -> None:
        run, *rest = event[1]
        inbox = self.runs.get(run)
        if inbox is None:
            return
        events = [rest]  # one event: key, kind, attempt, seconds, error
        if type(rest[0]) is not str:  # a batch's bundle (see .worker._Bundle)
            events, batch, places, attempts, seconds = rest
            if places:  # the steps that completed came first
                inbox.put((batch, _DONE, memoryview(places).cast("I"),
                           memoryview(attempts).cast("I"), memoryview(seconds).cast("d")))
        for key, kind, attempt, seconds, error in events:
            inbox.put((key, kind, attempt, seconds,
                       _load_error(error) if type(error) is bytes else error))


    def lost_worker(self, event: tuple[Any, ...]) -> None:
        """A worker left the cluster (the scheduler's topic ``all``): tell each run
        which of its tasks were processing there."""
        message = event[1]
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        held: dict[str, list[str]] = {}
        for key in message.get("processing-tasks") or ():
            if isinstance(key, str) and key.rpartition("-")[2] in self.runs:
                held.setdefault(key.rpartition("-")[2], []).append(key)
        for run, keys in held.items():
            self.runs[run].put((None, "held", 0, 0.0, keys))


_routers: weakref.WeakKeyDictionary[Client, _Router] = weakref.WeakKeyDictionary()
_routers_lock = threading.Lock()


def _router(client: Client) -> _Router:
    """The router of ``client``; subscribes it to the topic the first time."""
    with _routers_lock:
        router = _routers.get(client)
        if router is None:
            router = _routers[client] = _Router()
            client.subscribe_topic(TOPIC, router)
        return router


def _follow_workers(client: Client, router: _Router, run: str, inbox: _Inbox | None) -> None:
    """Add (or, with ``inbox=None``, remove) a run of ``client``. While it has runs, the
    client hears of lost workers (topic ``all``; not for ever: the scheduler would send
    the client's own goodbye on it to a closed connection, and log that loudly)."""
    with _routers_lock:
        before = bool(router.runs)
        if inbox is None:
            router.runs.pop(run, None)
        else:
            router.runs[run] = inbox
        if before and not router.runs:
            client.unsubscribe_topic("all")
        elif router.runs and not before:
            client.subscribe_topic("all", router.lost_worker)


def _forget_events(client: Client) -> None:
    """Let the scheduler drop its history of the events on :data:`TOPIC`.

    The scheduler keeps the last 1,000 events of each topic after handing them
    on; an expansion's event holds the nodes that the op returned (about 40 bytes
    each), a batch's the reports of its nodes. Nobody reads them again.
    """
    try:
        client.run_on_scheduler(_truncate_topic, TOPIC)
    except Exception:  # a scheduler that refuses pickled functions keeps them
        pass


def _truncate_topic(topic: str, dask_scheduler: Any = None) -> None:
    """On the scheduler: forget the events on ``topic`` (distributed's broker)."""
    broker = getattr(dask_scheduler, "_broker", None)
    if broker is not None:
        broker.truncate(topic)


def _load_error(data: bytes) -> BaseException:
    try:
        return pickle.loads(data)  # type: ignore[no-any-return]  # a pickled exception
    except Exception as exc:
        return SerializationError(f"an op failed on a dask worker, and its exception could "
                                  f"not be unpickled here: {exc}")


class _Run:
    """One run on the cluster: submit, then report what the events and futures say to
    the run's :class:`~.record.RunRecord`."""

    def __init__(self, client: Client, record: RunRecord, lowered: Lowered, run_id: str,
                 patience: float = math.inf, threads: int = 0):
        self.client = client
        self.threads = threads  # the cluster's (to cut batches); 0: not asked yet
        self.patience = patience  # seconds without any worker before giving up
        self.workerless_since: float | None = None
        self.next_look = 0.0  # when to ask the scheduler about its workers again
        self.record = record
        self.nodes = record.nodes
        self.lowered = lowered
        self.run_id = run_id
        self.fail_fast = record.fail_fast
        self.targets = {t._key for t in record.graph.targets}
        self.held: dict[str, Future[Any]] = {}  # futures of this run, not yet let go
        self.bridge: dict[str, Future[Any]] = {}  # what tasks held back for a probe need
        self.scattered: dict[str, Future[Any]] = {}
        self.waiting: set[str] = set()  # fail-fast: the targets not done yet
        self.stopped = False
        self.lost = False
        self.gave_up = False  # the cluster had no worker for too long
        self.running: set[str] = set()  # heard to start, not yet to end
        self.cut_short: dict[str, int] = {}  # key -> its runs ended by a worker's death
        self.pending: Lowered | None = None  # what the run grew by, not submitted yet
        self.early: set[str] = set()  # expanded nodes whose value's task went with their children
        self.expanders: set[int] = set()  # ids of the ops whose nodes expanded in this run
        self.grown_later = False  # whether nodes created at run time wait for a probe
        self.idle = 0  # quiet polls in a row with every task of the run ended (see _stranded)
        self.unsaved: list[tuple[str, str]] = []  # nodes whose values the workers did not save
        record.on_grow = self._grow
        record.on_settled = self._settled
        if self.fail_fast:
            record.on_stop = self._stop
        else:
            record.on_release = self._let_go

    def go(self) -> Results:
        record, lowered = self.record, self.lowered
        for key, error in lowered.broken.items():
            record.failed(key, error)
        if lowered.broken and self.fail_fast:
            return record.results()
        parents = record.parents  # a rerun's nodes created at run time: their parents need them
        lowered.keep([k for k in lowered.tasks if k in parents or (
            k in self.targets and k not in record.overrides)])
        computed = [k for k in lowered.tasks if k not in record.overrides]
        wanted = [k for k in computed if k in self.targets]
        later = self.targets & lowered.deferred  # they need a rerun's expanded nodes
        if not wanted and not later:
            return record.results()
        if self.fail_fast and not lowered.deferred:
            hold = wanted
            lowered.picks.clear()  # not held: the scheduler may let go of batches
        else:
            hold = computed
        if self.fail_fast and not any(record.hooks.values()):
            ends = self.targets | set(lowered.probes)  # nobody watches the others
            parents = record.parents  # but a node created at run time may settle its parent
            inbox = _Inbox(lambda key, kind: kind not in _ENDED or key in ends or key in parents)
        else:
            inbox = _Inbox(lambda key, kind: True)
        router = _router(self.client)
        _follow_workers(self.client, router, self.run_id, inbox)
        try:
            self.scattered = self._scatter()  # held to the end: lost, they cannot be recomputed
            self._submit(lowered, hold, later=False, bridge=True)
            self.waiting = set(wanted) | later
            self._follow(inbox)
            if self.gave_up:
                return record.results()  # the values of the done nodes are gone
            if not self.lost:
                record.values.update(self._gather())
                if record.returned or lowered.kinds:  # large events: expansions, bundles
                    _forget_events(self.client)
                self._warn_unsaved()
                return record.results()
        except BaseException:
            self._cancel()
            raise
        finally:
            _follow_workers(self.client, router, self.run_id, None)
            self._release()
        raise self._lost()

    def _submit(self, lowered: Lowered, hold: list[str], later: bool,
                bridge: bool = False) -> None:
        """Submit the tasks of ``lowered`` not held back for a probe, or (``later``) those
        held back, holding the futures of ``hold`` in place of any held before (and with
        ``bridge``, of what the tasks held back need, till they are submitted)."""
        hold = [k for k in hold if (k in lowered.later) == later] if lowered.later else hold
        bridged = []
        if bridge:
            held, now = self.held, set(hold)
            bridged = [k for k in lowered.bridge() if k not in held and k not in now]
        tasks = lowered.tasks
        futures = self.client.get(lowered.expression(later),
                                  [tasks[k].key for k in (*hold, *bridged)], sync=False)
        old = [self.held.pop(k) for k in hold if k in self.held]
        self.held.update(zip(hold, futures))
        if bridged:
            self.bridge = dict(zip(bridged, futures[len(hold):]))
        for future in old:
            future.release()

    def _probed(self, force: bool = False) -> bool:
        """Once the probe nodes have ended (or, with ``force``, at once), batch and
        submit the tasks held back for them; whether that happened now."""
        lowered, record = self.lowered, self.record
        if not lowered.later or self.stopped:
            return False
        if not force and not all(map(self._probe_ended, lowered.probes)):
            return False
        durations = record.durations
        quick.observe(lowered.timings({k: durations[k] for k in lowered.probes
                                       if k in durations}))
        lowered.batch(self.targets if self.fail_fast else None, self.threads, later=True)
        tasks = [k for k in lowered.part(later=True) if k not in record.overrides]
        if self.fail_fast and not self.grown_later:  # else nodes created at run time: all held
            tasks = [k for k in tasks if k in self.targets]
        self._submit(lowered, tasks, later=True)
        lowered.later, self.grown_later = set(), False
        for future in self.bridge.values():  # the later tasks hold them now
            future.release()
        self.bridge = {}
        return True

    def _warn_unsaved(self) -> None:
        """One :class:`~flowdispatch.CacheWarning`, here, for the values that the
        workers could not save to the cache."""
        if self.unsaved:
            key, why = self.unsaved[0]
            warnings.warn(CacheWarning(
                f"flowdispatch: {len(self.unsaved)} values could not be saved to the cache "
                f"by the dask workers, so their nodes will run again next time; node "
                f"{key!r}: {why}. Each worker needs the cache's store (and its "
                "credentials), and the client's cache_secret if it has one."), stacklevel=6)

    def _probe_ended(self, key: str) -> bool:
        """Whether probe node ``key`` has ended: it completed, failed or expanded, or
        its task returned without a word (it needs a node that expanded)."""
        record = self.record
        if key in record.states or key in record.returned:
            return True
        future = self.held.get(key)
        return future is not None and future.done()

    def _follow(self, inbox: _Inbox) -> None:
        """Report events until the run has ended, or ended without telling."""
        while self._open() and not self.stopped:
            events = inbox.take(_POLL)
            with paused_gc():  # expansions lower nodes in bulk
                self._take(events)
                probed = self._probed()  # what a probe held back goes before what grew since
                self._flush()
            if probed:
                continue
            if not events and self._silent():  # quiet: did something end without an event?
                self._take(inbox.take(0))  # what came in meanwhile comes first
                self._flush()
                self._unexplained()
                if self._probed(force=True):
                    continue
                if not self.fail_fast or self.lost:
                    return
            elif not events and self._workerless():
                self._give_up()
                return
            elif not events and self._stranded():
                self._strand()
                return

    def _open(self) -> bool:
        """Whether something the run waits for has yet to end."""
        if not self.fail_fast:
            return self.record.open > 0
        if self.record.children:  # an expanded target completes with its children
            states = self.record.states
            self.waiting = {k for k in self.waiting if states.get(k) != "done"}
        return bool(self.waiting)

    def _scatter(self, values: dict[str, Any] | None = None) -> dict[str, Future[Any]]:
        values = self.lowered.scatter if values is None else values
        if not values:
            return {}
        try:
            return self.client.scatter(values, hash=False)  # type: ignore[no-any-return]  # distributed is unannotated
        except Exception as exc:
            raise SerializationError(
                f"overrides for {sorted(values)} could not be sent to the dask "
                f"workers: {exc}") from exc

    # -- growing -----------------------------------------------------------------------
    def _grow(self, parent: str, new: list[Node[Any]]) -> None:
        """Node ``parent`` expanded, and ``new`` joined the run: lower them (see
        :func:`.grow.grow`), to submit with the next :meth:`_flush`; and unless its
        children are of ops seen to expand, its value's task and what needs it too."""
        if self.stopped or self.gave_up:
            return
        record, early = self.record, self.early
        self.expanders.add(id(record.nodes[parent]._op))
        up = record.parents.get(parent)
        while up is not None:  # their value's tasks get DEFERRED: they settle again
            early.discard(up)
            up = record.parents.get(up)
        sub = self._growing()
        grow(sub, record, parent, new, self._live, early)
        expanders, live = self.expanders, self._live
        if (all(id(node._op) not in expanders for node in new)
                and all(live(child) for child in record.children[parent])):
            early.add(parent)
            settle(sub, record, parent, early)

    def _settled(self, key: str) -> None:
        """Expanded node ``key`` completed: lower its value's task and what waits for it
        (see :func:`.grow.settle`), to submit with the next :meth:`_flush`, unless
        that went with its children and holds."""
        if key in self.early:
            self.early.discard(key)
        elif not (self.stopped or self.gave_up):
            settle(self._growing(), self.record, key, self.early)

    def _growing(self) -> Lowered:
        if self.pending is None:
            self.pending = _grown(self.lowered)
        return self.pending

    def _flush(self) -> None:
        """Submit what the run grew by, and hold it in place of what it replaces."""
        if self.grown_later:  # what grew waits on the client till the probes have ended
            return
        sub, self.pending = self.pending, None
        if sub is None or not sub.tasks or self.stopped or self.gave_up:
            return
        lowered = self.lowered
        if sub.kinds:
            if not self.threads:
                self.threads = sum(self.client.nthreads().values())
            if not lowered.later:  # ops never measured: a few nodes first, the rest later
                sub.probe(self.threads)
            sub.batch(self.targets if self.fail_fast else None, self.threads)
        sub._rewire(lowered.picks)  # nodes batched by an earlier growth
        _merge(lowered, sub)
        self.scattered.update(self._scatter(sub.scatter))
        self.grown_later = self.grown_later or bool(sub.later)
        self._submit(sub, list(sub.tasks), later=False)

    def _live(self, key: str) -> bool:
        """Whether node ``key``'s value is surely on the cluster: this run holds it."""
        lowered, pending = self.lowered, self.pending
        return ((pending is not None and key in pending.tasks) or key in self.held
                or key in self.bridge or key in lowered.alias or key in lowered.given
                or lowered.dask_key(key) in lowered.picks)

    # -- what happened -----------------------------------------------------------------
    def _take(self, events: list[tuple[Any, ...]]) -> None:
        """Report ``events``: those of nodes, and the steps that a batch completed
        (``(batch, _DONE, places, attempts, seconds)``, see :class:`.worker._Bundle`)."""
        for event in events:
            if event[1] == _DONE:
                _, _, places, attempts, seconds = event
                keys = self.lowered.batches[event[0]]
                for place, attempt, took in zip(places, attempts, seconds):
                    self._event(keys[place], "done", attempt, took, None)
            else:
                self._event(*event)

    def _event(self, key: str, kind: str, attempt: int, seconds: float,
               error: BaseException | None) -> None:
        """Report one event of a node (none once the node has ended)."""
        record = self.record
        if kind == "held":
            self._held_by_lost_worker(error)  # type: ignore[arg-type]
            return
        if kind == "unsaved":  # a worker could not save the node's value to the cache
            self.unsaved.append((key, error))  # type: ignore[arg-type]  # its reason: str
            return
        if kind == "reloaded" and key in self.nodes:  # a lost value, read from the cache
            record.reloaded(key)
            if key in record.states:
                return
            kind = "done"  # its own report was lost with its worker
        if key not in self.nodes or key in record.states:
            return
        if kind == "start":
            self.running.add(key)
            record.started(key)
            return
        if kind == "expand" and key in record.returned:
            return  # it ran again (its worker died): it expanded already
        self.running.discard(key)
        tries = attempt + self.cut_short.get(key, 0)  # if starts went unheard
        record.attempts[key] = max(record.attempts.get(key, 0), tries)
        if kind == "done":
            self.waiting.discard(key)
            record.finished(key, seconds)
        elif kind == "expand" and not isinstance(error, BaseException):
            record.finished(key, seconds, error)  # what its op returned: nodes, to run
        else:
            record.failed(key, error, seconds)  # type: ignore[arg-type]  # a failure has its error

    def _held_by_lost_worker(self, tasks: list[str]) -> None:
        """Count the runs cut short on a worker that died (see the module docstring)."""
        states = self.record.states
        held = []
        for task in tasks:
            key = self.lowered.node_keys.get(task)
            if key in self.nodes and key not in states and not self._chained(key):
                held.append(key)
        running = [k for k in held if k in self.running] or (held if len(held) == 1 else [])
        for key in running:
            self.running.discard(key)
            self.cut_short[key] = self.cut_short.get(key, 0) + 1

    def _chained(self, key: str) -> bool:
        """Whether ``key``'s task is a chain of fused steps (events of a step that ran
        just before its worker died may not have left it: which step died is unknown)."""
        task = self.lowered.tasks.get(key)  # none for a node batched by its expansion
        return task is not None and isinstance(task.func, Chain)

    def _let_go(self, key: str) -> None:
        """No unfinished node needs the value of ``key`` any more: the cluster may free it."""
        future = self.held.pop(key, None)
        if future is not None:
            future.release()

    def _silent(self) -> bool:
        """Whether what is left of the run ended without events: every open node's
        future has finished (its task, or an ancestor's, failed outside the op, its
        worker kept dying, or the scheduler dropped it). With fail-fast, one is enough."""
        states = self.record.states
        futures = [f for k, f in (*self.held.items(), *self.bridge.items()) if k not in states]
        self.lost = any(f.status == "cancelled" for f in futures)  # not by us: we had not stopped
        if not self.fail_fast:
            return all(f.done() for f in futures)
        return self.lost or any(f.status == "error" for f in futures)

    def _stranded(self) -> bool:
        """Whether the run waits for nodes that nothing left can finish: for
        :data:`_IDLE` quiet polls in a row, every task it holds has ended and nothing
        waits to be submitted (an event on its way arrives before its task's result)."""
        futures = (*self.held.values(), *self.bridge.values())
        if self.pending is not None or self.lowered.later or not all(f.done() for f in futures):
            self.idle = 0
            return False
        self.idle += 1
        return self.idle >= _IDLE

    def _strand(self) -> None:
        """Fail the open nodes rather than wait for ever."""
        self._fail_open(lambda key: (
            f"node {key!r} cannot finish: every task of the run on the dask cluster has "
            "ended, none with its value (it needs a node that expanded, and no task "
            "followed to build that node's value). This is a bug in flowdispatch: please "
            "report it with the workflow; the nodes that completed keep their values (fd.run)."))

    def _fail_open(self, why: Callable[[str], str]) -> None:
        """Fail each open node with an :class:`ExecutorError` saying ``why(key)``: the
        first of each line (in topological order); the rest are upstream-failed."""
        record, states = self.record, self.record.states
        for key in [k for k in self.nodes if k not in states]:
            if key not in states:
                record.failed(key, ExecutorError(why(key)))

    def _workerless(self) -> bool:
        """Whether the cluster has had no worker for ``patience`` seconds (asked at most
        once a second, only while the run is quiet)."""
        now = time.monotonic()
        if now < self.next_look:
            return False
        self.next_look = now + min(1.0, self.patience / 4)
        try:
            workers = self.client.scheduler_info(n_workers=0).get("n_workers", 1)
        except Exception:  # lost contact: the futures will say so
            return False
        if workers:
            self.workerless_since = None
            return False
        if self.workerless_since is None:
            self.workerless_since = now
        return now - self.workerless_since >= self.patience

    def _give_up(self) -> None:
        """Fail the nodes left, and cancel what is left of the run."""
        self.gave_up = True
        states = self.record.states
        left = [k for k in self.nodes if k not in states]
        shown = ", ".join(repr(k) for k in left[:10]) + (", ..." if len(left) > 10 else "")
        self._fail_open(lambda key: (
            f"the dask cluster has had no worker for {self.patience:g} s, so node {key!r} "
            f"could not run; {len(left)} nodes could not run: {shown}. Start workers "
            "(`dask worker <scheduler address>`) and run again; the setting "
            "no_workers_timeout (or DaskExecutor(no_workers_timeout=...)) says how long to "
            "wait. Ops declared cache=True keep their values on disk."))
        self._cancel()

    def _lost(self) -> ExecutorError:
        done = sum(state == "done" for state in self.record.states.values())
        return ExecutorError(
            f"the dask cluster lost this run: its scheduler went away, or dropped the run's "
            f"tasks, before they finished ({done} of {len(self.nodes)} nodes had finished, "
            "but their values lived on the cluster and are gone). Check the scheduler and its "
            "logs, then run again; ops declared cache=True keep their values on disk.")

    def _unexplained(self) -> None:
        """Fail the nodes whose tasks erred without an event, the first ones first (their
        descendants are then upstream-failed, so only the first of a line is blamed)."""
        record = self.record
        for key in self.nodes:  # in topological order
            future = self.held.get(key)
            if key in record.states or future is None or future.status != "error":
                continue
            try:
                error = future.exception()
            except Exception as exc:  # lost contact with the scheduler
                error = exc
            culprit = self._culprit(error, key)
            if type(error).__name__ == "KilledWorker":  # it took down allowed_failures + 1
                tries = getattr(error, "allowed_failures", 0) + 1
                record.attempts[culprit] = max(record.attempts.get(culprit, 0), tries)
            record.failed(culprit, error.with_traceback(future.traceback()))
            if self.stopped:
                return

    def _culprit(self, error: BaseException, key: str) -> str:
        """The node to blame for ``error``, which erred the task of ``key``: a
        KilledWorker's task, or in a chain of steps the first that had not finished."""
        culprit = self.lowered.node_keys.get(getattr(error, "task", None))  # type: ignore[arg-type]  # KilledWorker
        states = self.record.states
        if culprit not in self.nodes or culprit in states:
            return key
        if not self._chained(culprit):
            return culprit
        steps = [s.key for s in self.lowered.tasks[culprit].func.steps]
        first = next(k for k in steps if k not in states)
        error.add_note(
            f"flowdispatch: the worker died while running ops that compute folded into one "
            f"dask task ({', '.join(self.nodes[k].name for k in steps)}); {first!r} is the "
            "first of them that had not finished. Had the op before it finished only "
            "milliseconds earlier, its report may have died with the worker: "
            "DaskExecutor(fuse=False) runs each op as its own task.")
        return first  # type: ignore[no-any-return]  # a step's key: str

    def _gather(self) -> dict[str, Any]:
        """The values that travel back: done targets, and values unfinished nodes need."""
        states, targets = self.record.states, self.targets
        keep = [k for k in self.held if states.get(k) == "done"
                and (not self.fail_fast or k in targets)]  # fail-fast: what expanded is held too
        return dict(zip(keep, self.client.gather([self.held[k] for k in keep]))) if keep else {}

    # -- letting go --------------------------------------------------------------------
    def _stop(self) -> None:
        """Stop the run: cancel the targets not done yet (and so what they need)."""
        self.stopped = True
        states = self.record.states
        undone = [f for k, f in self.held.items() if k in self.targets and states.get(k) != "done"]
        if undone:
            self.client.cancel(undone)

    def _cancel(self) -> None:
        """Cancel what is left of the run on the cluster (the targets, and so their ancestors)."""
        targets = [f for k, f in self.held.items() if k in self.targets]
        if targets:
            self.client.cancel(targets)

    def _release(self) -> None:
        """Let go of every future of the run: the scheduler forgets its tasks."""
        futures = [*self.held.values(), *self.bridge.values(), *self.scattered.values()]
        self.held, self.bridge, self.scattered = {}, {}, {}
        for future in futures:
            future.release()
