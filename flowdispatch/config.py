"""Configuration: flowdispatch's settings, kept in ``dask.config`` under ``flowdispatch``.

So they can be set in code (``fd.config.set(executor="sync")``, which is also a
context manager), in dask's YAML files, or in the environment
(``DASK_FLOWDISPATCH__EXECUTOR=sync``).

``executor``
    The default executor (``"threads"``).
``cache_dir``
    Where ``cache=True`` ops keep their values: a folder, or an fsspec URL such
    as ``s3://bucket/prefix`` that needs a ``cache_secret`` too (``None``: the
    user's cache folder); see :mod:`flowdispatch.cache.remote`.
``cache_secret``
    A secret (a string of at least 16 bytes) that signs the cache's entries, see
    :mod:`flowdispatch.cache`.
``max_dynamic_nodes``
    The most nodes that may join one run as ops return nodes (1,000,000): past
    it the expanding node fails, instead of exhausting memory.
``no_workers_timeout``
    Seconds a dask run waits while its cluster has no worker at all before it
    gives up on the nodes left (``60``); see
    :class:`~flowdispatch.executors.dask.DaskExecutor`.
``pure``
    What ``fd.op(pure=None)`` and ``fd.value(pure=None)`` mean (``False``): with
    ``True``, every node's key follows its op and arguments, as dask's
    ``delayed_pure`` setting.

Examples
--------
>>> import flowdispatch as fd
>>> fd.config.get("executor")
'threads'
>>> with fd.config.set(executor="sync"):
...     fd.config.get("executor")
'sync'
>>> fd.config.get("executor")
'threads'
"""

from __future__ import annotations

from typing import Any

import dask.config

__all__ = ["DEFAULTS", "get", "pure", "set"]

#: The settings flowdispatch knows, with their defaults.
DEFAULTS: dict[str, Any] = {
    "executor": "threads",
    "cache_dir": None,
    "cache_secret": None,
    "max_dynamic_nodes": 1_000_000,
    "no_workers_timeout": 60.0,
    "pure": False,
}

dask.config.update_defaults({"flowdispatch": dict(DEFAULTS)})


def _check(name: str) -> None:
    if name not in DEFAULTS:
        raise KeyError(
            f"unknown flowdispatch setting {name!r}; expected one of {sorted(DEFAULTS)}"
        )


def get(name: str) -> Any:
    """Return the current value of setting ``name``.

    Examples
    --------
    >>> get("cache_dir") is None
    True
    """
    _check(name)
    return dask.config.get(f"flowdispatch.{name}", DEFAULTS[name])


def pure() -> bool:
    """The setting ``pure``, read fast: it is read for every node that is built.

    Examples
    --------
    >>> pure()
    False
    """
    section = dask.config.config.get("flowdispatch")
    return bool(section.get("pure")) if section else False


def set(**settings: Any) -> dask.config.set:  # noqa: A001 - mirrors dask.config.set
    """Change settings now; use the result as a context manager to undo on exit.

    Examples
    --------
    >>> with set(executor="processes"):
    ...     get("executor")
    'processes'
    """
    for name in settings:
        _check(name)
    return dask.config.set({f"flowdispatch.{name}": value for name, value in settings.items()})
