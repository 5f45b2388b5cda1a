"""Resolving ``executor=``: names, addresses, instances and pools to one Executor.

Names come from :func:`register_executor` and from the entry-point group
``flowdispatch.executors`` (third-party executors); ``None`` means the
configured default (``fd.config.get("executor")``).

Examples
--------
>>> import flowdispatch as fd
>>> executor, owned = resolve("sync")
>>> executor, owned
(SyncExecutor(), True)
>>> resolve("warp-drive")
Traceback (most recent call last):
...
flowdispatch.errors.UnknownExecutorError: unknown executor 'warp-drive'; expected one of ['dask', 'processes', 'sync', 'threads'], a scheduler address such as 'tcp://127.0.0.1:8786', an fd.Executor, a distributed.Client or a concurrent.futures.Executor
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .. import config
from ..core.allowlist import resolve as load  # a dotted path, imported now
from ..errors import UnknownExecutorError
from .base import Executor

__all__ = ["register_executor", "resolve"]

ENTRY_POINT_GROUP = "flowdispatch.executors"


#: The built-in backends, by dotted path: none is imported until it is asked for.
BUILT_IN = {
    "sync": "flowdispatch.executors.local:SyncExecutor",
    "threads": "flowdispatch.executors.local:ThreadExecutor",
    "processes": "flowdispatch.executors.local:ProcessExecutor",
    "dask": "flowdispatch.executors.dask:DaskExecutor",
}
_POOL = "flowdispatch.executors.local:PoolExecutor"

_factories: dict[str, Callable[..., Executor] | str] = dict(BUILT_IN)
_loaded: dict[str, Callable[..., Executor]] = {}  # dotted path -> what it names, once imported


def _factory(name: str) -> Callable[..., Executor] | None:
    factory = _factories.get(name) or _from_entry_point(name)
    if not isinstance(factory, str):
        return factory
    loaded = _loaded.get(factory)
    if loaded is None:
        loaded = _loaded[factory] = load(factory)
    return loaded


def is_client(obj: Any) -> bool:
    """Whether ``obj`` is a ``distributed.Client`` (without importing distributed)."""
    return type(obj).__name__ == "Client" and type(obj).__module__.startswith("distributed")


def register_executor(name: str, factory: Callable[[], Executor] | str) -> None:
    """Make ``executor=name`` create executors with ``factory()``.

    ``factory`` may be a dotted path, ``"package.module:name"``, imported
    only when an executor of that name is first asked for.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> fd.register_executor("two-threads", lambda: fd.ThreadExecutor(max_workers=2))
    >>> fd.op(sum)([1, 2]).compute(executor="two-threads")
    3
    """
    if not isinstance(name, str) or not name or "://" in name:
        raise ValueError(f"executor name: expected a non-empty name without '://', got {name!r}")
    if not callable(factory) and not (isinstance(factory, str) and ":" in factory):
        raise TypeError(f"executor factory: expected a callable or a dotted path "
                        f"'package.module:name', got {type(factory).__name__} {factory!r}")
    _factories[name] = factory


def _from_entry_point(name: str) -> Callable[[], Executor] | None:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            factory: Callable[[], Executor] = point.load()
            _factories[name] = factory
            return factory
    return None


def _known() -> list[str]:
    names = set(_factories) | {p.name for p in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def resolve(executor: Any) -> tuple[Executor, bool]:
    """``(executor, owned)``: owned executors were made here and must be closed."""
    if executor is None:
        executor = config.get("executor")
    if isinstance(executor, Executor):
        return executor, False
    if isinstance(executor, str):
        if "://" in executor:
            return load(BUILT_IN["dask"])(address=executor), True
        factory = _factory(executor)
        if factory is None:
            raise UnknownExecutorError(
                f"unknown executor {executor!r}; expected one of {_known()}, a scheduler "
                "address such as 'tcp://127.0.0.1:8786', an fd.Executor, a "
                "distributed.Client or a concurrent.futures.Executor"
            )
        made = factory()
        if not isinstance(made, Executor):
            raise UnknownExecutorError(
                f"executor factory for {executor!r} returned {type(made).__name__}, "
                "expected an fd.Executor"
            )
        return made, True
    if isinstance(executor, cf.Executor):
        return load(_POOL)(executor), True
    if is_client(executor):
        return load(BUILT_IN["dask"])(client=executor), True
    raise UnknownExecutorError(
        f"executor=: expected a name ({_known()}), a scheduler address, an fd.Executor, "
        f"a distributed.Client or a concurrent.futures.Executor; got {type(executor).__name__}"
    )
