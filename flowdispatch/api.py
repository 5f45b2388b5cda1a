"""Running graphs: ``compute``, ``run``, ``persist`` and ``submit``.

Every entry point resolves ``executor=`` in one place
(:func:`flowdispatch.executors.resolve`), builds the graph of the targets,
cut at any ``overrides``, and closes the executor afterwards if it made it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, overload

from .core.graph import Graph, as_nodes
from .core.node import Node, ancestors
from .core.op import Op
from .core.results import Results
from .core.traverse import materialize, scan, substitute
from .errors import CancelledError, GraphError
from .executors import resolve
from .mainguard import check_main_guard
from .view.progress import ProgressBar

if TYPE_CHECKING:
    from typing import Unpack

    from .executors.dask.client import DaskExecutor

__all__ = ["compute", "persist", "run", "run_graph", "submit"]

_A = TypeVar("_A")
_B = TypeVar("_B")
_C = TypeVar("_C")
_D = TypeVar("_D")
_E = TypeVar("_E")
_F = TypeVar("_F")


class _RunOptions(TypedDict, total=False):
    """The keyword arguments of :func:`compute`, for type checkers."""

    executor: Any
    overrides: Mapping[Any, Any] | None
    progress: bool | str
    callbacks: Iterable[Any]


def _override_keys(overrides: Mapping[Any, Any] | None) -> dict[str, Any]:
    if not overrides:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides: expected a dict {{node: value}}, got {type(overrides).__name__}")
    out = {}
    for node, value in overrides.items():
        if not isinstance(node, (Node, str)):
            raise TypeError(
                f"overrides: expected nodes (or node keys) as keys, got {type(node).__name__} {node!r}"
            )
        out[node._key if isinstance(node, Node) else node] = value
    return out


def _graph(targets: tuple[Any, ...], overrides: dict[str, Any]) -> tuple[Graph, dict[str, Any]]:
    nodes = as_nodes(targets, strict=False)
    graph = Graph.cut(nodes, frozenset(overrides))
    missing = [k for k in overrides if k not in graph]
    if missing:  # cut away by another override, or not an ancestor at all?
        known = ancestors(nodes)
        unknown = [k for k in missing if k not in known]
        if unknown:
            raise GraphError(
                f"overrides: node {unknown[0]!r} is not one of the targets or their "
                f"ancestors ({len(known)} nodes), so its value would not be used: override "
                "a node the targets need (a typo, or a node from another graph?)")
    return graph, {k: v for k, v in overrides.items() if k in graph}


def _check_targets(targets: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    """The targets, iterators made lists; an op among them (not called) is refused."""
    if not targets and what == "run":
        raise TypeError("run: expected nodes to run, got none: fd.run(node, ...)")
    targets = materialize(targets)
    for target in targets:
        items = target.values() if isinstance(target, dict) else (
            target if isinstance(target, (list, tuple, set)) else (target,))
        for item in items:
            if isinstance(item, Op):
                raise TypeError(
                    f"{what}: {item.op_name!r} is an op: call it to make a node, e.g. "
                    f"fd.{what}({item.op_name}(...))")
    return targets


def run_graph(graph: Graph, *, executor: Any = None, overrides: Mapping[Any, Any] | None = None,
              progress: bool | str = False, callbacks: Iterable[Any] = (),
              fail_fast: bool = False) -> Results:
    """Run a prepared graph (see :func:`run`)."""
    callbacks = list(callbacks)
    if progress is True:
        callbacks.append(ProgressBar())
    elif progress == "graph":
        from .view.live import LiveGraph

        callbacks.append(LiveGraph())
    elif progress is not False and progress is not None:
        raise ValueError(
            f"progress: expected False, True (a progress bar) or 'graph' (the graph redrawn "
            f"as the run goes, in a notebook; a progress bar elsewhere), got {progress!r}"
        )
    chosen, owned = resolve(executor)
    try:
        check_main_guard(chosen)
        return chosen.run(graph, overrides=_override_keys(overrides), fail_fast=fail_fast,
                          callbacks=callbacks)
    finally:
        if owned:
            chosen.close()


def run(*targets: Any, executor: Any = None, overrides: Mapping[Any, Any] | None = None,
        progress: bool | str = False, callbacks: Iterable[Any] = ()) -> Results:
    """Run the targets and their ancestors; never raises for an op's failure.

    Parameters
    ----------
    *targets
        Nodes, or containers of nodes.
    executor
        ``None`` (the configured default), a name (``"sync"``, ``"threads"``,
        ``"processes"``, ``"dask"``), a scheduler address, an ``fd.Executor``,
        a ``distributed.Client`` or a ``concurrent.futures.Executor``.
    overrides
        ``{node: value}``: use the value instead of running the node; its
        ancestors do not run (unless something else needs them).
    progress
        ``True``: a progress bar (tqdm). ``"graph"``: the graph, redrawn in
        place in a notebook as the run goes (a progress bar elsewhere; see
        :mod:`flowdispatch.live`). ``False`` (the default): nothing.
    callbacks
        Objects with ``on_start``, ``on_node_start``, ``on_node_finish``,
        ``on_node_error`` and ``on_finish`` methods (see :class:`~flowdispatch.Callback`).

    Returns
    -------
    Results
        The state, value, error, duration and attempts of every node.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> inc = fd.op(lambda x: x + 1, name="inc")
    >>> a = inc(1)
    >>> b = inc(a)
    >>> res = fd.run(b, executor="sync", overrides={a: 10})
    >>> res[b], res.state(a), res.state(b)
    (11, 'skipped', 'done')
    """
    targets = _check_targets(targets, "run")
    keyed = _override_keys(overrides)
    graph, keyed = _graph(targets, keyed)
    return run_graph(graph, executor=executor, overrides=keyed, progress=progress,
                     callbacks=callbacks)


@overload
def compute(a: Node[_A], /, **options: Unpack[_RunOptions]) -> tuple[_A]: ...
@overload
def compute(a: list[Node[_A]], /, **options: Unpack[_RunOptions]) -> tuple[list[_A]]: ...
@overload
def compute(a: Node[_A], b: Node[_B], /, **options: Unpack[_RunOptions]) -> tuple[_A, _B]: ...
@overload
def compute(a: Node[_A], b: Node[_B], c: Node[_C], /,
            **options: Unpack[_RunOptions]) -> tuple[_A, _B, _C]: ...
@overload
def compute(a: Node[_A], b: Node[_B], c: Node[_C], d: Node[_D], /,
            **options: Unpack[_RunOptions]) -> tuple[_A, _B, _C, _D]: ...
@overload
def compute(a: Node[_A], b: Node[_B], c: Node[_C], d: Node[_D], e: Node[_E], /,
            **options: Unpack[_RunOptions]) -> tuple[_A, _B, _C, _D, _E]: ...
@overload
def compute(a: Node[_A], b: Node[_B], c: Node[_C], d: Node[_D], e: Node[_E], f: Node[_F], /,
            **options: Unpack[_RunOptions]) -> tuple[_A, _B, _C, _D, _E, _F]: ...
@overload
def compute(*targets: Any, **options: Unpack[_RunOptions]) -> tuple[Any, ...]: ...
def compute(*targets: Any, executor: Any = None, overrides: Mapping[Any, Any] | None = None,
            progress: bool | str = False, callbacks: Iterable[Any] = ()) -> tuple[Any, ...]:
    """Compute the targets; return their values, as ``dask.compute`` does.

    Containers of nodes come back as containers of values. The first op that
    fails stops the run: its own exception is raised, unchanged in type and
    traceback, with a note naming the node. Parameters are those of :func:`run`.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> add = fd.op(lambda x, y: x + y, name="add")
    >>> a = add(1, 2)
    >>> fd.compute(a, {"twice": add(a, a)}, "as is", executor="sync")
    (3, {'twice': 6}, 'as is')
    """
    targets = _check_targets(targets, "compute")
    if not any(scan(target, {}) for target in targets):
        return targets  # nothing lazy: as dask.compute, values pass through
    keyed = _override_keys(overrides)
    graph, keyed = _graph(targets, keyed)
    results = run_graph(graph, executor=executor, overrides=keyed, progress=progress,
                        callbacks=callbacks, fail_fast=True)
    first = results.first_error()
    if first is not None:
        raise first[1]
    unfinished = [t._key for t in graph.targets if t._key not in results.values]
    if unfinished:  # an executor that stopped without a failure to show for it
        raise CancelledError(f"nodes {unfinished} were cancelled before they finished, "
                             "without an error of their own; run them again")
    return tuple(substitute(target, results.values) for target in targets)


def _dask_executor(executor: Any, what: str) -> DaskExecutor:
    from .executors.dask.client import DaskExecutor

    if isinstance(executor, str) and "://" in executor:
        raise TypeError(
            f"{what}: expected a distributed.Client or an fd.DaskExecutor that outlives the "
            f"futures, got the address {executor!r}: a client made for this call alone would "
            "stay connected, with nothing to close it. Connect one yourself, and close it "
            f"when you are done with the futures: client = distributed.Client({executor!r}); "
            f"fd.{what}(..., {'client' if what == 'submit' else 'executor'}=client)")
    chosen, owned = resolve("dask" if executor is None else executor)
    if not isinstance(chosen, DaskExecutor):
        if owned:
            chosen.close()
        raise TypeError(
            f"expected a dask executor (None, 'dask', an address, a distributed.Client or "
            f"an fd.DaskExecutor), got {type(chosen).__name__}"
        )
    return chosen


def persist(*targets: Any, executor: Any) -> dict[Node[Any], Any]:
    """Start computing the targets on a dask cluster; ``{node: distributed.Future}``.

    The futures keep their values on the workers, so the cluster, and the
    client that holds them, must outlive them: pass an ``fd.DaskExecutor`` or a
    ``distributed.Client`` that you keep open (and close when you are done).
    """
    if executor is None or executor == "dask":
        raise TypeError(
            "persist: expected a cluster that outlives the futures (an fd.DaskExecutor "
            f"or a distributed.Client), got {executor!r}: an embedded "
            "cluster made for one call would stop when the call returns"
        )
    return _dask_executor(executor, "persist").submit(*targets)


def submit(*targets: Any, client: Any) -> dict[Node[Any], Any]:
    """Lower the targets' graph to futures on ``client`` (a ``distributed.Client`` or an
    ``fd.DaskExecutor``): ``{node: distributed.Future}``."""
    return _dask_executor(client, "submit").submit(*targets)
