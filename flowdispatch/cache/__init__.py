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
cluster the workers read and write the same cache: a folder on a file system
they all mount, or a store named by an fsspec URL (``s3://bucket/prefix``,
``gs://...``), see :mod:`flowdispatch.cache.remote`. An entry goes to a store
in one PUT of the whole object, so no reader ever sees part of one; a store
needs a ``cache_secret`` (below), as it has no owner to check. ``memory://``
(in the process only) needs none.

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
from ..core.op import CACHE_DECLARED
from ..core.traverse import substitute
from ..errors import CacheError, CacheWarning
from . import entryfile, remote

if TYPE_CHECKING:
    from ..core.graph import Graph
    from ..core.node import Node
    from ..core.op import Op

__all__ = ["CachePlan", "cache_dir", "clear", "entries", "entry_path", "lineage_keys", "load",
           "maybe_present", "prepare", "require_signing", "save", "sizes", "try_save"]


def cache_dir() -> str:
    """The cache in use: the ``cache_dir`` setting, else the user's cache folder.

    A local folder comes back as an absolute path (a ``file://`` URL too), any
    other fsspec URL as it is, without a trailing slash.
    """
    chosen = config.get("cache_dir")
    if chosen is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        chosen = os.path.join(base, "flowdispatch")
    if not isinstance(chosen, (str, os.PathLike)):
        raise TypeError(f"cache_dir: expected a directory path or URL, got "
                        f"{type(chosen).__name__} {chosen!r}; set it with "
                        "fd.config.set(cache_dir='...')")
    return remote.normalize(os.fspath(chosen))


def entry_path(lineage: str, folder: str | None = None) -> str:
    """Where the value of the lineage key ``lineage`` is kept in the cache ``folder``
    (default: :func:`cache_dir`): ``<folder>/<lineage[:2]>/<lineage>``.

    Examples
    --------
    >>> entry_path("3f2a77", "s3://bucket/cache")
    's3://bucket/cache/3f/3f2a77'
    """
    folder = cache_dir() if folder is None else folder
    join = _url_join if remote.is_url(folder) else os.path.join
    return join(folder, lineage[:2], lineage)


def _url_join(*parts: str) -> str:
    return "/".join(parts)


def maybe_present(path: str) -> bool:
    """Whether an entry may be at ``path``: it exists (a local path), or it is in a
    remote store (asked only by reading it: one request instead of two)."""
    return remote.is_url(path) or os.path.exists(path)


def require_signing(folder: str | None = None) -> None:
    """Raise :class:`~flowdispatch.CacheError` if the cache ``folder`` (default:
    :func:`cache_dir`) is a remote store and no ``cache_secret`` is set.

    Examples
    --------
    >>> require_signing("memory://cache")  # in the process: no secret needed
    >>> require_signing("s3://bucket/cache")
    Traceback (most recent call last):
    ...
    flowdispatch.errors.CacheError: the cache_dir 's3://bucket/cache' is a shared store: ...
    """
    folder = cache_dir() if folder is None else folder
    if not (remote.is_url(folder) and remote.needs_signing(folder)):
        return
    try:
        if entryfile.secret() is not None:
            return
    except (TypeError, ValueError):  # a bad secret: load and save say so
        return
    raise CacheError(
        f"the cache_dir {folder!r} is a shared store: whoever can write it could run code "
        "in every process that reads it, so its entries must be signed. Set a cache secret "
        "(at least 16 bytes, such as python -c 'import secrets; print(secrets.token_hex())') "
        "with fd.config.set(cache_secret=...) or DASK_FLOWDISPATCH__CACHE_SECRET, the same "
        "in the client and in every worker")


def save(path: str, value: Any) -> None:
    """Write ``value`` to ``path`` atomically, with its key (the file's name) and a
    checksum, signed when a ``cache_secret`` is set; warn
    (:class:`~flowdispatch.CacheWarning`) if it cannot be pickled or written, or the
    cache folder cannot be trusted: the run goes on, and the node runs again next time.

    ``path`` may be a URL (see :mod:`flowdispatch.cache.remote`): the entry is then
    written in one piece, and only when it is signed (a remote store needs a
    ``cache_secret``). New local folders are private to the user (mode 0o700):
    the cache holds pickles, and loading a pickle can run code.
    """
    problem = try_save(path, value)
    if problem is not None:
        warnings.warn(f"flowdispatch: {problem}; its node will run again next time",
                      CacheWarning, stacklevel=2)


def try_save(path: str, value: Any) -> str | None:
    """:func:`save`, saying what went wrong (``None``: saved) rather than warning: for a
    dask worker, which tells the client instead (see :mod:`flowdispatch.executors.dask`).

    Examples
    --------
    >>> import os, tempfile
    >>> blocked = os.path.join(tempfile.mkdtemp(), "a-file")
    >>> open(blocked, "w").close()  # a file where the cache's folders would go
    >>> try_save(os.path.join(blocked, "ab", "abcd"), 1)[:39]
    'a value could not be saved to the cache'
    """
    import cloudpickle

    try:
        url = remote.is_url(path)
        if url:
            require_signing(_root(path))
        signing = entryfile.secret()
        data = cloudpickle.dumps(value)
        if url:
            remote.write(path, entryfile.seal(path.rsplit("/", 1)[-1], data, signing))
        else:
            _save_local(path, data, signing)
    except Exception as exc:
        return (f"a value could not be saved to the cache at {path!r} "
                f"({type(exc).__name__}: {exc})")
    return None


def _save_local(path: str, data: bytes, signing: bytes | None) -> None:
    """Write the entry to a temporary file in its folder, then rename it into place."""
    folder = os.path.dirname(path)
    os.makedirs(os.path.dirname(folder), mode=0o700, exist_ok=True)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    problem = entryfile.entry_folder_problem(path)
    if problem is not None:
        _distrusted(*problem, level=5)
        return
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(entryfile.seal(os.path.basename(path), data, signing))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load(path: str) -> tuple[bool, Any]:
    """``(True, value)`` from ``path``, or ``(False, None)`` if it is missing or cannot be
    trusted (then with a :class:`~flowdispatch.CacheWarning`, and the node runs again).

    An entry is trusted when it holds the key it is read under (its file name)
    and its checksum holds; with a ``cache_secret`` set, also its signature. A
    local entry must also belong to the current user, as must the folders it is
    in (see :func:`flowdispatch.cache.entryfile.folder_problem`); an entry of a
    remote store (a URL, see :mod:`flowdispatch.cache.remote`) has no owner to
    check, and is read only when a ``cache_secret`` is set. Nothing else is
    unpickled.
    """
    if "://" in path:  # a URL (remote.is_url, inlined: this is the local fast path)
        return _load_remote(path)
    problem = entryfile.entry_folder_problem(path)
    if problem is not None:
        if not os.path.exists(path):  # no cache folder yet: nothing to distrust
            return False, None
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
    return _value(path, os.path.basename(path), blob)


def _load_remote(path: str) -> tuple[bool, Any]:
    """:func:`load` for the entry at the URL ``path``."""
    try:
        require_signing(_root(path))
    except CacheError as exc:
        return _warn(f"flowdispatch: cached values are not read: {exc}")
    try:
        blob = remote.read(path)
    except Exception as exc:
        return _unreadable(path, f"{type(exc).__name__}: {exc}", level=5)
    if blob is None:
        return False, None
    return _value(path, path.rsplit("/", 1)[-1], blob, level=5)


def _value(path: str, key: str, blob: bytes, level: int = 4) -> tuple[bool, Any]:
    """What :func:`load` returns for the entry ``blob`` read at ``path`` under ``key``
    (warnings point ``level`` frames up: at the caller of :func:`load`)."""
    import pickle

    try:
        signing = entryfile.secret()
    except (TypeError, ValueError) as exc:  # the cache_secret setting
        return _warn(f"flowdispatch: cached values are not read: {exc}", level)
    try:
        data = entryfile.unseal(key, blob, signing)
    except entryfile.OldFormat as exc:
        return _warn(f"flowdispatch: entries in the cache folder {_root(path)!r} are not "
                     f"read: {exc}; their nodes run again and replace them", level)
    except entryfile.Unsigned:
        return _warn(
            f"flowdispatch: unsigned entries in the cache folder {_root(path)!r} are not read: "
            "a cache_secret is set; their nodes run again and replace them. If dask workers "
            "wrote them, give the workers the same secret (DASK_FLOWDISPATCH__CACHE_SECRET)",
            level)
    except entryfile.Untrusted as exc:
        return _unreadable(path, str(exc), level=level + 1)
    try:
        return True, pickle.loads(data)
    except Exception as exc:
        return _unreadable(path, f"{type(exc).__name__}: {exc}", level=level + 1)


def _root(path: str) -> str:
    """The cache folder of the entry at ``path``."""
    if remote.is_url(path):
        return path.rsplit("/", 2)[0]
    return os.path.dirname(os.path.dirname(path))


def _warn(message: str, stacklevel: int = 4) -> tuple[bool, None]:
    """Warn the caller of :func:`load` (or :func:`save`) that a value is not used."""
    warnings.warn(message, CacheWarning, stacklevel=stacklevel)
    return False, None


def _unreadable(path: str, why: str, level: int = 4) -> tuple[bool, None]:
    return _warn(f"flowdispatch: the cached value at {path!r} could not be read ({why}); "
                 "its node runs again and replaces it", level)


def _distrusted(folder: str, why: str, level: int = 4) -> tuple[bool, None]:
    return _warn(f"flowdispatch: the cache folder {folder!r} is not used: {why}. Whoever can "
                 "write it can run code in the processes that read it: make it private to "
                 "you (chmod 700), or choose another with fd.config.set(cache_dir=...)", level)


_MAGICS = (entryfile.MAGIC, *entryfile.OLD_MAGICS)


def entries(directory: str | None = None) -> list[str]:
    """The paths of the cache entries in ``directory`` (default: :func:`cache_dir`), a
    local folder or a URL (then the entries are URLs too).

    Only flowdispatch's own files count (by their header, of this format or an
    older one), whatever else the folder holds.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> with fd.config.set(cache_dir="memory://entries-doc"):
    ...     fd.compute(fd.op(cache=True)(abs)(-4), executor="sync")
    ...     entries()
    (4,)
    ['memory://entries-doc/.../...']
    >>> clear("memory://entries-doc")[0]
    1
    """
    folder = cache_dir() if directory is None else remote.normalize(os.fspath(directory))
    if remote.is_url(folder):
        return list(remote.listing(folder, _MAGICS))
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


def sizes(directory: str | None = None) -> dict[str, int]:
    """The cache entries in ``directory`` (as :func:`entries`) with their sizes in bytes."""
    folder = cache_dir() if directory is None else remote.normalize(os.fspath(directory))
    if remote.is_url(folder):
        return remote.listing(folder, _MAGICS)
    return {entry: os.path.getsize(entry) for entry in entries(folder)}


def clear(directory: str | None = None) -> tuple[int, int]:
    """Remove the cache entries in ``directory`` (default: :func:`cache_dir`, a local
    folder or a URL); return how many, and their bytes. Other files are left alone."""
    found = sizes(directory)
    if found and remote.is_url(next(iter(found))):
        remote.remove(found)
        return len(found), sum(found.values())
    count = size = 0
    for entry, bytes_ in found.items():
        os.remove(entry)
        size += bytes_
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
    if not CACHE_DECLARED[0]:
        return graph, overrides, None
    cached = [node for node in graph if _cached(node) and node._key not in overrides]
    if not cached:
        return graph, overrides, None
    keys = lineage_keys(graph, overrides, of=cached)
    folder = cache_dir()
    require_signing(folder)
    url = remote.is_url(folder)
    join = _url_join if url else os.path.join  # local paths: plain os calls, as fast as ever
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
        paths[node._key] = join(folder, lineage[:2], lineage)
    # a store is asked only by reading an entry: one request instead of two
    present = set(paths) if url else {k for k, path in paths.items() if os.path.exists(path)}
    cut, hits = _read_present(graph, overrides, paths, present)
    stores = {k: path for k, path in paths.items() if k in cut and k not in hits}
    if hits:
        overrides = {k: v for k, v in {**overrides, **hits}.items() if k in cut}
    return cut, overrides, CachePlan(hits, stores)


def _read_present(graph: Graph, overrides: dict[str, Any], paths: dict[str, str],
                  present: set[str]) -> tuple[Graph, dict[str, Any]]:
    """The graph cut at the cached nodes whose entries can be read, and their values.

    Only the entries the cut needs are read (a store's, all at once); one that
    cannot be read makes its node run after all, and so may what it needs: the
    graph is cut again, and what the new cut needs is read.
    """
    hits: dict[str, Any] = {}
    cut = graph
    while present:
        cut = graph.cut(graph.targets, frozenset(overrides) | present)
        wanted = [key for key in present if key in cut and key not in hits]
        unreadable = set()
        for key, (found, value) in zip(wanted, _load_all([paths[k] for k in wanted])):
            if found:
                hits[key] = value
            else:
                unreadable.add(key)
        if not unreadable:
            break
        present -= unreadable
    return cut, {k: v for k, v in hits.items() if k in cut}


def _load_all(paths: list[str]) -> list[tuple[bool, Any]]:
    """:func:`load` of each of ``paths``: the entries of a store are fetched together."""
    if not paths or not remote.is_url(paths[0]):
        return [load(path) for path in paths]
    loaded: list[tuple[bool, Any]] = []
    for path, blob in zip(paths, remote.read_many(paths)):
        if isinstance(blob, bytes):
            loaded.append(_value(path, path.rsplit("/", 1)[-1], blob, level=5))
        elif blob is None:
            loaded.append((False, None))
        else:
            loaded.append(_unreadable(path, f"{type(blob).__name__}: {blob}", level=5))
    return loaded
