"""The on-disk cache of ops declared with ``cache=True``: content-addressed values.

A cached node's key is a hash of its op's code (the source of the function,
or the op's ``version=`` when given), the tokens of its arguments, and the
keys of everything upstream: the lineage of the value, never the value of
an input. So a run finds a node's value on disk when the same code ran on the
same inputs before, whichever run it was; a change to an op's code, or to any
argument upstream, gives new keys to it and to everything downstream.

Each value is one file, ``<cache_dir>/<key[:2]>/<key>``: the value pickled
by cloudpickle, after a header that names its key and a checksum, written to a
temporary name first and renamed into place, so that a crash never leaves half
a value behind (the format is in :mod:`flowdispatch.cache.entryfile`). The
directory comes from ``fd.config.set(cache_dir=...)``; by default
``$XDG_CACHE_HOME/flowdispatch`` (``~/.cache/flowdispatch``). On a dask
cluster the workers read and write the same path: they need to share its file
system.

Who can write the cache folder can run code in every process that reads it:
loading a value unpickles it, and unpickling can run any code. So an entry is
not loaded (a :class:`~flowdispatch.CacheWarning` says why, and the node runs
again) when another user owns it, when its name is not the key in its header
(an entry copied, moved or linked into another's place), or when its checksum
fails; and a cache folder that every user can write, or that lies in another
user's folder (through a symbolic link, say), is not used at all. New folders
are private to the user (mode 0o700).

A checksum finds damage, not forgery: another process of the same user, or
anything that can write the folder, can plant a valid entry. Against that,
set a secret (``fd.config.set(cache_secret=...)``, dask's YAML files, or
``DASK_FLOWDISPATCH__CACHE_SECRET`` in the environment; at least 16 bytes):
entries are then signed with HMAC-SHA256 over their header, key and value,
and an unsigned or badly signed entry is never unpickled. This protects only
as far as the secret is kept: whoever can read it (the environment or the
files it comes from) can sign entries too. Without a secret, entries are
checked as above and not signed. Dask workers save values themselves, and
each reads the secret from its own settings: start them with the same
``DASK_FLOWDISPATCH__CACHE_SECRET`` (the embedded cluster's workers take the
settings in force when it starts); values saved without it are not read by
a client that has one (a warning says so).

Executors call :func:`prepare` first: the nodes found on disk become values
(``"cached"`` in the Results) and what only they needed is cut away; the
nodes not found are saved (:func:`save`) where they complete.

Examples
--------
>>> import tempfile
>>> import flowdispatch as fd
>>> calls = []
>>> @fd.op(cache=True)
... def slow_square(x):
...     calls.append(x)
...     return x * x
>>> with tempfile.TemporaryDirectory() as folder, fd.config.set(cache_dir=folder):
...     first = fd.run(slow_square(4), executor="sync")
...     again = fd.run(slow_square(4), executor="sync")
>>> first.state(first.targets[0]), again.state(again.targets[0]), again[again.targets[0]]
('done', 'cached', 16)
>>> calls  # the second run read the value from disk
[4]
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import config
from ..core.node import ancestors
from ..core.traverse import substitute
from ..errors import CacheWarning
from . import entryfile

if TYPE_CHECKING:
    from ..core.graph import Graph
    from ..core.node import Node
    from ..core.op import Op

__all__ = ["CachePlan", "cache_dir", "clear", "entries", "lineage_keys", "load", "prepare", "save"]


def cache_dir() -> str:
    """The cache directory in use: the ``cache_dir`` setting, else the user's cache folder."""
    chosen = config.get("cache_dir")
    if chosen is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        chosen = os.path.join(base, "flowdispatch")
    if not isinstance(chosen, (str, os.PathLike)):
        raise TypeError(f"cache_dir: expected a directory path, got {type(chosen).__name__} "
                        f"{chosen!r}; set it with fd.config.set(cache_dir='...')")
    return os.path.abspath(os.fspath(chosen))


def save(path: str, value: Any) -> None:
    """Write ``value`` to ``path`` atomically, with its key (the file's name) and a
    checksum, signed when a ``cache_secret`` is set; warn
    (:class:`~flowdispatch.CacheWarning`) if it cannot be pickled or written, or the
    cache folder cannot be trusted: the run goes on, and the node runs again next time.

    New folders are private to the user (mode 0o700): the cache holds pickles,
    and loading a pickle can run code.
    """
    import cloudpickle

    try:
        key = os.path.basename(path)
        signing = entryfile.secret()
        data = cloudpickle.dumps(value)
        folder = os.path.dirname(path)
        os.makedirs(os.path.dirname(folder), mode=0o700, exist_ok=True)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        problem = entryfile.entry_folder_problem(path)
        if problem is not None:
            _distrusted(*problem)
            return
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(entryfile.seal(key, data, signing))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except Exception as exc:
        warnings.warn(f"flowdispatch: a value could not be saved to the cache at {path!r} "
                      f"({type(exc).__name__}: {exc}); its node will run again next time",
                      CacheWarning, stacklevel=2)


def load(path: str) -> tuple[bool, Any]:
    """``(True, value)`` from ``path``, or ``(False, None)`` if it is missing or cannot be
    trusted (then with a :class:`~flowdispatch.CacheWarning`, and the node runs again).

    An entry is trusted when the current user owns it and the folders it is in
    (see :func:`flowdispatch.cache.entryfile.folder_problem`), it holds the key it is
    read under (its file name), and its checksum holds; with a ``cache_secret``
    set, also its signature. Nothing else is unpickled.
    """
    import pickle

    problem = entryfile.entry_folder_problem(path)
    if problem is not None:
        return _distrusted(*problem)
    try:
        with open(path, "rb") as f:
            owner = os.fstat(f.fileno()).st_uid
            blob = f.read()
    except FileNotFoundError:
        return False, None
    except OSError as exc:
        return _unreadable(path, f"{type(exc).__name__}: {exc}")
    if hasattr(os, "getuid") and owner != os.getuid():
        return _unreadable(path, f"it belongs to user id {owner}, not to you, and loading "
                                 "a pickle can run code")
    try:
        signing = entryfile.secret()
    except (TypeError, ValueError) as exc:  # the cache_secret setting
        return _warn(f"flowdispatch: cached values are not read: {exc}", 3)
    try:
        data = entryfile.unseal(os.path.basename(path), blob, signing)
    except entryfile.OldFormat as exc:
        return _warn(f"flowdispatch: entries in the cache folder {_root(path)!r} are not "
                     f"read: {exc}; their nodes run again and replace them", 3)
    except entryfile.Unsigned:
        return _warn(
            f"flowdispatch: unsigned entries in the cache folder {_root(path)!r} are not read: "
            "a cache_secret is set; their nodes run again and replace them. If dask workers "
            "wrote them, give the workers the same secret (DASK_FLOWDISPATCH__CACHE_SECRET)", 3)
    except entryfile.Untrusted as exc:
        return _unreadable(path, str(exc))
    try:
        return True, pickle.loads(data)
    except Exception as exc:
        return _unreadable(path, f"{type(exc).__name__}: {exc}")


def _root(path: str) -> str:
    return os.path.dirname(os.path.dirname(path))


def _warn(message: str, stacklevel: int = 4) -> tuple[bool, None]:
    """Warn the caller of :func:`load` (or :func:`save`) that a value is not used."""
    warnings.warn(message, CacheWarning, stacklevel=stacklevel)
    return False, None


def _unreadable(path: str, why: str) -> tuple[bool, None]:
    return _warn(f"flowdispatch: the cached value at {path!r} could not be read ({why}); "
                 "its node runs again and replaces it")


def _distrusted(folder: str, why: str) -> tuple[bool, None]:
    return _warn(f"flowdispatch: the cache folder {folder!r} is not used: {why}. Whoever can "
                 "write it can run code in the processes that read it: make it private to "
                 "you (chmod 700), or choose another with fd.config.set(cache_dir=...)")


_MAGICS = (entryfile.MAGIC, *entryfile.OLD_MAGICS)


def entries(directory: str | None = None) -> list[str]:
    """The paths of the cache entries in ``directory`` (default: :func:`cache_dir`).

    Only flowdispatch's own files count (by their header, of this format or an
    older one), whatever else the folder holds.
    """
    folder = cache_dir() if directory is None else os.path.abspath(directory)
    found = []
    for sub in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        path = os.path.join(folder, sub)
        if len(sub) != 2 or not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            entry = os.path.join(path, name)
            try:
                with open(entry, "rb") as f:
                    if f.read(len(entryfile.MAGIC)).startswith(_MAGICS):
                        found.append(entry)
            except OSError:  # a folder, or unreadable: not ours to count
                pass
    return found


def clear(directory: str | None = None) -> tuple[int, int]:
    """Remove the cache entries in ``directory`` (default: :func:`cache_dir`); return
    how many, and their bytes. Other files are left alone."""
    count = size = 0
    for entry in entries(directory):
        size += os.path.getsize(entry)
        os.remove(entry)
        count += 1
        try:
            os.rmdir(os.path.dirname(entry))  # once its folder is empty
        except OSError:
            pass
    return count, size


class _Upstream:
    """An upstream node in a lineage: tokenized as its own lineage key."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("flowdispatch-upstream", self.key)


def _code_digest(node: Node[Any]) -> str:
    """What identifies the code of ``node``'s op: its ``version=``, else its source, else
    (builtins, partials, callable objects) dask's token of the callable itself."""
    from dask.tokenize import tokenize

    op: Op[..., Any] = node._op  # type: ignore[assignment]  # a cached node is an op's
    fn = op.__wrapped__
    name = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', None)}"
    if op.settings.version is not None:
        return f"{name} version {op.settings.version!r}"
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return f"{name} token {tokenize(fn, ensure_deterministic=True)}"
    return f"{name} source {hashlib.sha256(source.encode()).hexdigest()}"


def lineage_keys(graph: Graph, overrides: dict[str, Any],
                 of: Iterable[Node[Any]] | None = None) -> dict[str, str | BaseException]:
    """The lineage key of the nodes ``of`` (default: all) and their ancestors, or why
    one has none.

    A node whose arguments (or an upstream value given in ``overrides``) dask
    cannot tokenize deterministically gets the ``TokenizationError`` instead,
    and so does everything downstream of it.
    """
    from dask.tokenize import tokenize

    nodes = graph if of is None else ancestors(of, {n.key for n in graph.inputs}).values()
    keys: dict[str, str | BaseException] = {}
    digests: dict[int, str] = {}
    for node in nodes:
        key = node._key
        try:
            if key in overrides:
                keys[key] = tokenize("value", overrides[key], ensure_deterministic=True)
                continue
            ups = {}
            for dep in graph.deps_of(key):
                up = keys[dep._key]
                if isinstance(up, BaseException):
                    raise up
                ups[dep._key] = _Upstream(up)
            op = node._op
            if op is None:  # a data node
                keys[key] = tokenize("value", node._args[0], ensure_deterministic=True)
                continue
            digest = digests.get(id(op))
            if digest is None:
                digest = digests[id(op)] = _code_digest(node)
            args = substitute(node._args, ups) if ups else node._args
            kwargs = substitute(node._kwargs or {}, ups) if ups else node._kwargs or {}
            keys[key] = tokenize(digest, args, kwargs, ensure_deterministic=True)
        except Exception as exc:
            keys[key] = exc
    return keys


@dataclass
class CachePlan:
    """What the cache does for one run.

    ``hits``: node key -> the value found on disk. ``stores``: node key -> the
    file to save its value to, once it completes.
    """

    hits: dict[str, Any]
    stores: dict[str, str]


def _cached(node: Node[Any]) -> bool:
    op = node._op
    return op is not None and op.settings.cache


def prepare(graph: Graph, overrides: dict[str, Any]) -> tuple[Graph, dict[str, Any], CachePlan | None]:
    """Look up the graph's cached nodes: ``(graph, overrides, plan)`` for the run.

    Without a node declared ``cache=True`` the graph and overrides come back
    as they are, with no plan. Otherwise the nodes found on disk join the
    overrides, and the graph is cut there: what only they needed does not
    run, and values that the cut leaves unused are not even read.
    """
    cached = [node for node in graph if _cached(node) and node._key not in overrides]
    if not cached:
        return graph, overrides, None
    keys = lineage_keys(graph, overrides, of=cached)
    folder = cache_dir()
    paths: dict[str, str] = {}
    for node in cached:
        lineage = keys[node._key]
        if isinstance(lineage, BaseException):
            warnings.warn(
                f"flowdispatch: node {node._key!r} has cache=True but is not cached: its "
                f"arguments, or a value upstream, cannot be tokenized deterministically "
                f"({lineage}). Give their types a __dask_tokenize__ method, or make them "
                "in an op upstream.", CacheWarning, stacklevel=3)
            continue
        paths[node._key] = os.path.join(folder, lineage[:2], lineage)
    present = {k for k, path in paths.items() if os.path.exists(path)}
    hits: dict[str, Any] = {}
    cut = graph
    while present:
        cut = graph.cut(graph.targets, frozenset(overrides) | present)
        unreadable = set()
        for key in present:
            if key in cut and key not in hits:
                found, value = load(paths[key])
                if found:
                    hits[key] = value
                else:  # it runs after all, and so may what it needs: cut again
                    unreadable.add(key)
        if not unreadable:
            break
        present -= unreadable
    hits = {k: v for k, v in hits.items() if k in cut}
    stores = {k: path for k, path in paths.items() if k in cut and k not in hits}
    if hits:
        overrides = {k: v for k, v in {**overrides, **hits}.items() if k in cut}
    return cut, overrides, CachePlan(hits, stores)
